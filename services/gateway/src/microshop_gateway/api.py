"""The gateway's catch-all route: match the table, check the token, proxy, and map failures to problems."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response

from microshop_gateway.domain import RouteNotFound, RouteTable
from microshop_gateway.proxy import Proxy, ProxyRequest, ProxyResponse, ResponseTooLarge, UpstreamTimeout
from microshop_gateway.settings import HTTP_METHODS, RouteSpec
from microshop_kit.app import KitDep
from microshop_kit.auth import principal_from_authorization
from microshop_kit.errors import ProblemError

router = APIRouter()


@dataclass(frozen=True)
class Gateway:
    """What the catch-all route needs; built at start-up and kept on ``app.state.gateway``."""

    routes: RouteTable
    proxy: Proxy


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def _no_route(path: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"No route for {path}.", type_="/problems/not-found")


async def _identity(kit: KitDep, route: RouteSpec, request: Request) -> dict[str, str]:
    """Identity headers for the upstream; a token route without a valid token ends here with a 401."""
    authorization = request.headers.get("authorization")
    if route.auth == "public" or (route.auth == "optional" and not authorization):
        return {}
    try:
        principal = await principal_from_authorization(kit.verifier, authorization)
    except ProblemError as problem:
        if route.auth == "optional" and problem.status == 401:
            return {}  # a stale token on a page is just an anonymous visitor
        raise
    return {"X-User-Id": principal.user_id}


def _proxy_request(request: Request, body: bytes) -> ProxyRequest:
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(request.url.path)
    client = request.client.host if request.client else None
    return ProxyRequest(
        method=request.method,
        raw_path=path,
        query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=list(request.headers.items()),
        body=body,
        client_host=client,
        scheme=request.url.scheme,
    )


def _response(method: str, answer: ProxyResponse) -> Response:
    response = Response(answer.body, status_code=answer.status)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    # Starlette counted the body it sends; for HEAD no body came, so the length the upstream announced wins.
    upstream_length = method == "HEAD"
    ours = [h for h in response.raw_headers if not upstream_length or h[0] != b"content-length"]
    theirs = [h for h in headers if upstream_length or h[0] != b"content-length"]
    response.raw_headers = [*ours, *theirs]
    return response


@router.api_route("/{path:path}", methods=list(HTTP_METHODS), include_in_schema=False)
async def proxy(request: Request, kit: KitDep, gateway: GatewayDep) -> Response:
    try:
        route = gateway.routes.match(request.method, request.url.path)
    except RouteNotFound as exc:
        raise _no_route(exc.path) from exc
    identity = await _identity(kit, route, request)
    body = await request.body()
    try:
        answer = await gateway.proxy.forward(route, _proxy_request(request, body), identity)
    except UpstreamTimeout as exc:
        raise ProblemError(
            504,
            "Gateway Timeout",
            f"The {exc.service} service did not answer in time.",
            type_="/problems/upstream-timeout",
            service=exc.service,
        ) from exc
    except ResponseTooLarge as exc:
        raise ProblemError(
            502,
            "Bad Gateway",
            f"The {exc.service} service answered more than the gateway passes on.",
            type_="/problems/upstream-too-large",
            service=exc.service,
        ) from exc
    return _response(request.method, answer)

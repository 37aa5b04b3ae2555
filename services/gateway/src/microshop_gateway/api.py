"""The gateway's hot path as plain ASGI: match the table, check the token, proxy, map failures to problems.

It sits inside the kit's middleware (request id, trace, body limit, metrics, access log) and in front of the
FastAPI router, which only serves the gateway's own paths (``/livez``, ``/readyz``, ``/metrics``). Skipping
FastAPI's routing and dependency injection on the proxy path is most of what keeps the hop cheap
(docs/architecture.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from microshop_gateway.domain import RouteNotFound, RouteTable
from microshop_gateway.proxy import (
    BadUpstreamAnswer,
    Proxy,
    ResponseTooLarge,
    UpstreamTimeout,
    request_headers,
    response_headers,
)
from microshop_gateway.settings import RouteSpec
from microshop_kit.app import ROUTE_KEY, UPSTREAM_KEY, Kit, problem_response
from microshop_kit.auth import principal_from_authorization
from microshop_kit.errors import ProblemError, UpstreamUnavailable

#: Paths the gateway answers itself; everything else goes through the route table.
OWN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Gateway:
    """What the proxy path needs; built at start-up and kept on ``app.state.gateway``."""

    routes: RouteTable
    proxy: Proxy


def _no_route(path: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"No route for {path}.", type_="/problems/not-found")


async def _identity(kit: Kit, route: RouteSpec, authorization: str | None) -> Mapping[str, str]:
    """Identity headers for the upstream; a token route without a valid token ends here with a 401."""
    if route.auth == "public" or (route.auth == "optional" and not authorization):
        return {}
    try:
        principal = await principal_from_authorization(kit.verifier, authorization)
    except ProblemError as problem:
        if route.auth == "optional" and problem.status == 401:
            return {}  # a stale token on a page is just an anonymous visitor
        raise
    return {"X-User-Id": principal.user_id}


def _upstream_problem(exc: Exception) -> ProblemError:
    if isinstance(exc, UpstreamTimeout):
        return ProblemError(
            504,
            "Gateway Timeout",
            f"The {exc.service} service did not answer in time.",
            type_="/problems/upstream-timeout",
            service=exc.service,
        )
    if isinstance(exc, ResponseTooLarge):
        return ProblemError(
            502,
            "Bad Gateway",
            f"The {exc.service} service answered more than the gateway passes on.",
            type_="/problems/upstream-too-large",
            service=exc.service,
        )
    if isinstance(exc, BadUpstreamAnswer):
        return ProblemError(
            502,
            "Bad Gateway",
            f"The {exc.service} service gave a broken answer.",
            type_="/problems/upstream-broken",
            service=exc.service,
        )
    assert isinstance(exc, UpstreamUnavailable)
    return ProblemError(
        503,
        "Service Unavailable",
        f"The {exc.service} service is unavailable; try again shortly.",
        type_="/problems/upstream-unavailable",
        headers={"Retry-After": "2"},
        service=exc.service,
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ProxyMiddleware:
    """Proxies every request that is not one of the gateway's own paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in OWN_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            await self._proxy(state.gateway, state.kit, scope, receive, send)
        except ProblemError as problem:
            await problem_response(problem, path)(scope, receive, send)
        except (UpstreamUnavailable, UpstreamTimeout, ResponseTooLarge, BadUpstreamAnswer) as exc:
            await problem_response(_upstream_problem(exc), path)(scope, receive, send)

    async def _proxy(self, gateway: Gateway, kit: Kit, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            route = gateway.routes.match(method, path)
        except RouteNotFound as exc:
            raise _no_route(exc.path) from exc
        scope[ROUTE_KEY] = route.prefix
        scope[UPSTREAM_KEY] = route.service
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        authorization = next((value for name, value in raw_headers if name == b"authorization"), None)
        identity = await _identity(kit, route, authorization.decode("latin-1") if authorization else None)
        body = await _read_body(receive)
        raw_path: bytes = scope.get("raw_path") or quote(path).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        target = raw_path + b"?" + query if query else raw_path
        client = scope.get("client")
        headers = request_headers(
            raw_headers,
            identity,
            client_host=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            trust_forwarded=gateway.proxy.trust_forwarded,
        )
        answer = await gateway.proxy.forward(route, method, target, headers, body)
        head = method == "HEAD"
        out = response_headers(answer.headers, keep_length=head)
        if not head:
            out.append((b"content-length", str(len(answer.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if head else answer.body})

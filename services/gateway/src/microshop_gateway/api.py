"""The gateway's hot path as plain ASGI: header limits, match the table, rate limits, check the token, proxy,
map failures to problems.

It sits inside the kit's middleware (request id, trace, body limit, metrics, access log) and in front of the
FastAPI router, which only serves the gateway's own paths (``/livez``, ``/metrics``, the API docs; ``/readyz``
is answered here from the readiness loop's state). Skipping FastAPI's routing and dependency injection on the
proxy path is most of what keeps the hop cheap (docs/architecture.md has the measurements).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from urllib.parse import quote

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from microshop_gateway.domain import RouteNotFound, RouteTable
from microshop_gateway.limits import RateLimiter, Refusal
from microshop_gateway.metrics import GatewayMetrics
from microshop_gateway.openapi import ApiDocs
from microshop_gateway.proxy import (
    BadUpstreamAnswer,
    OpenCircuit,
    Proxy,
    ResponseTooLarge,
    UpstreamTimeout,
    request_headers,
    response_headers,
)
from microshop_gateway.readiness import Readiness
from microshop_gateway.settings import RouteSpec
from microshop_kit.app import ROUTE_KEY, UPSTREAM_KEY, Kit, problem_response
from microshop_kit.auth import principal_from_authorization
from microshop_kit.errors import ProblemError, UpstreamUnavailable

#: Paths the gateway answers itself; everything else goes through the route table.
OWN_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/api/openapi.json", "/api/docs"})
#: Methods whose request body is read under ``client_body_timeout`` (a GET or HEAD carries none).
_BODYLESS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ClientLimits:
    """What one client request may be: header lines and bytes, and time to send its body."""

    max_header_count: int = 64
    max_header_bytes: int = 16_384
    body_timeout: float = 10.0


@dataclass(frozen=True)
class Gateway:
    """What the proxy path needs; built at start-up and kept on ``app.state.gateway``."""

    routes: RouteTable
    proxy: Proxy
    readiness: Readiness
    docs: ApiDocs
    metrics: GatewayMetrics
    #: None when rate limiting is off.
    limiter: RateLimiter | None = None
    client: ClientLimits = ClientLimits()


def _no_route(path: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"No route for {path}.", type_="/problems/not-found")


async def _verified_user(kit: Kit, route: RouteSpec, authorization: str | None) -> str | None:
    """The verified account of the request, if any; a token route without a valid token ends here with a 401."""
    if route.auth == "public" or (route.auth == "optional" and not authorization):
        return None
    try:
        principal = await principal_from_authorization(kit.verifier, authorization)
    except ProblemError as problem:
        if route.auth == "optional" and problem.status == 401:
            return None  # a stale token on a page is just an anonymous visitor
        raise
    return principal.user_id


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _rate_limited(route: RouteSpec, refusal: Refusal) -> ProblemError:
    seconds = _retry_after(refusal.retry_after)
    who = "this address" if refusal.scope == "address" else "this account"
    return ProblemError(
        429,
        "Too Many Requests",
        f"Too many {route.rate_limit!r} requests from {who}; try again in {seconds} s.",
        type_="/problems/rate-limited",
        headers={"Retry-After": seconds},
        limit_class=route.rate_limit,
        scope=refusal.scope,
    )


def _headers_too_large(count: int, size: int, limits: ClientLimits) -> ProblemError:
    return ProblemError(
        431,
        "Request Header Fields Too Large",
        f"The request has {count} header lines and {size} bytes of headers; at most {limits.max_header_count} "
        f"lines and {limits.max_header_bytes} bytes are accepted.",
        type_="/problems/headers-too-large",
        headers={"Connection": "close"},
    )


def _upstream_problem(exc: Exception) -> ProblemError:
    if isinstance(exc, OpenCircuit):
        seconds = _retry_after(exc.retry_after)
        return ProblemError(
            503,
            "Service Unavailable",
            f"The {exc.service} service is unavailable (circuit open); try again in {seconds} s.",
            type_="/problems/upstream-unavailable",
            headers={"Retry-After": seconds},
            service=exc.service,
            circuit="open",
        )
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


def _has_body(scope: Scope, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request can carry a body. In HTTP/1 only with Content-Length or Transfer-Encoding (RFC 9112,
    6.3): a GET has neither, and then nothing is asked of the server (a receive costs as much as a header
    check many times over, measured on the hot path)."""
    if not scope.get("http_version", "1.1").startswith("1"):
        return True
    return any(name == b"transfer-encoding" or (name == b"content-length" and value != b"0") for name, value in headers)


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


async def _read_body_within(receive: Receive, seconds: float) -> bytes:
    """The whole body, or a 408 for a client that sends it too slowly (it would hold a task and a buffer)."""
    try:
        async with asyncio.timeout(seconds):
            return await _read_body(receive)
    except TimeoutError:
        raise ProblemError(
            408,
            "Request Timeout",
            f"The request body did not arrive within {seconds:g} s.",
            type_="/problems/request-timeout",
            headers={"Connection": "close"},
        ) from None


def _client_host(scope: Scope, headers: list[tuple[bytes, bytes]], trust_forwarded: bool) -> str | None:
    """The client address rate limits count against: the peer, or behind a trusted proxy the address that
    proxy appended to X-Forwarded-For (the last entry; earlier ones are the client's to forge)."""
    if trust_forwarded:
        forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
        if forwarded:
            last = forwarded[-1].rsplit(b",", 1)[-1].strip()
            if last:
                return last.decode("latin-1")
    client = scope.get("client")
    return client[0] if client else None


class ProxyMiddleware:
    """Proxies every request that is not one of the gateway's own paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        state = scope["app"].state
        gateway: Gateway = state.gateway
        try:
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            limits = gateway.client
            if len(headers) > limits.max_header_count:
                raise _headers_too_large(len(headers), sum(len(n) + len(v) for n, v in headers), limits)
            size = sum(len(name) + len(value) for name, value in headers)
            if size > limits.max_header_bytes:
                raise _headers_too_large(len(headers), size, limits)
            if path in OWN_PATHS:
                if path == "/readyz":
                    scope[ROUTE_KEY] = path
                    ready, body = gateway.readiness.report()
                    await JSONResponse(body, status_code=200 if ready else 503)(scope, receive, send)
                    return
                await self.app(scope, receive, send)
                return
            await self._proxy(gateway, state.kit, scope, receive, send)
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
        limiter = gateway.limiter
        if limiter is not None:
            # Before the token check: a flood of bad tokens is stopped here too, and costs no signature check.
            host = _client_host(scope, raw_headers, gateway.proxy.trust_forwarded)
            refusal = await limiter.check_address(route.rate_limit, host)
            if refusal is not None:
                gateway.metrics.refused(route.prefix, route.rate_limit, refusal.scope)
                raise _rate_limited(route, refusal)
        authorization = next((value for name, value in raw_headers if name == b"authorization"), None)
        user = await _verified_user(kit, route, authorization.decode("latin-1") if authorization else None)
        if limiter is not None and user is not None:
            refusal = await limiter.check_account(route.rate_limit, user)
            if refusal is not None:
                gateway.metrics.refused(route.prefix, route.rate_limit, refusal.scope)
                raise _rate_limited(route, refusal)
        if not _has_body(scope, raw_headers):
            body = b""
        elif method in _BODYLESS:
            body = await _read_body(receive)
        else:
            body = await _read_body_within(receive, gateway.client.body_timeout)
        raw_path: bytes = scope.get("raw_path") or quote(path).encode("ascii")
        query: bytes = scope.get("query_string", b"")
        target = raw_path + b"?" + query if query else raw_path
        client = scope.get("client")
        headers = request_headers(
            raw_headers,
            {"X-User-Id": user} if user is not None else {},
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

"""The proxy core: send one client request to an upstream instance over the kit's aiohttp pool.

Bodies are read whole (no streaming) in this first version: the kit already caps request bodies, and
``max_response_bytes`` caps answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from microshop_gateway.domain import Balancer
from microshop_gateway.settings import RouteSpec
from microshop_kit.context import outgoing_headers
from microshop_kit.errors import UpstreamError, UpstreamUnavailable
from microshop_kit.http import HttpPool
from microshop_kit.log import get_logger

log = get_logger("microshop.gateway")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})
#: Identity headers only the gateway may set: a client sending them is trying to pass as someone else.
FORGEABLE_IDENTITY = frozenset({"x-user-id", "x-user-roles", "x-forwarded-user"})
#: Replaced by the gateway's own values (the kit's request id and a child span of the current trace).
CONTEXT = frozenset({"x-request-id", "traceparent"})
FORWARDED = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})


class UpstreamTimeout(UpstreamError):
    """The upstream accepted the request but did not answer within the route's timeout."""


class ResponseTooLarge(UpstreamError):
    """The upstream's answer is larger than the gateway passes on."""


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """What the gateway forwards of one client request; ``raw_path`` and ``query`` are still URL-encoded."""

    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    client_host: str | None
    scheme: str


@dataclass(frozen=True, slots=True)
class ProxyResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Headers the sender listed in ``Connection`` are hop-by-hop too (RFC 9110, 7.6.1)."""
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _is_hop_by_hop(name: str, named: set[str]) -> bool:
    return name in HOP_BY_HOP or name in named or name.startswith("proxy-")


def request_headers(request: ProxyRequest, identity: Mapping[str, str], *, trust_forwarded: bool) -> CIMultiDict[str]:
    """The headers sent upstream: the client's, less hop-by-hop, forged identity and stale context headers,
    plus the request id, trace context, X-Forwarded-* and the verified identity."""
    named = _connection_named(request.headers)
    # Content-Length is recomputed by aiohttp from the body actually sent.
    dropped = FORGEABLE_IDENTITY | CONTEXT | {"content-length"} | (frozenset() if trust_forwarded else FORWARDED)
    headers: CIMultiDict[str] = CIMultiDict()
    incoming: dict[str, str] = {}
    for name, value in request.headers:
        lower = name.lower()
        if _is_hop_by_hop(lower, named) or lower in dropped:
            continue
        if lower in ("x-forwarded-for", "x-forwarded-proto"):
            incoming[lower] = value
            continue
        headers.add(name, value)
    headers.update(outgoing_headers())
    client = request.client_host or "unknown"
    chain = incoming.get("x-forwarded-for")
    headers["X-Forwarded-For"] = f"{chain}, {client}" if chain else client
    headers["X-Forwarded-Proto"] = incoming.get("x-forwarded-proto", request.scheme)
    headers.update(identity)
    return headers


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's answer headers passed to the client (the kit adds its own X-Request-ID)."""
    pairs = list(headers)
    named = _connection_named(pairs)
    return [
        (name, value)
        for name, value in pairs
        if not _is_hop_by_hop(name.lower(), named) and name.lower() != "x-request-id"
    ]


def _decoded(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


class _ConnectFailed(Exception):
    """No connection to the instance, or it closed before answering: safe to retry a GET elsewhere."""


class Proxy:
    """Forwards requests to the instances of each upstream service, balanced round-robin."""

    def __init__(
        self,
        pool: HttpPool,
        balancers: Mapping[str, Balancer],
        *,
        connect_timeout: float = 1.0,
        max_response_bytes: int = 10 * 1_048_576,
        trust_forwarded: bool = False,
    ) -> None:
        self.pool = pool
        self.balancers = balancers
        self.connect_timeout = connect_timeout
        self.max_response_bytes = max_response_bytes
        self.trust_forwarded = trust_forwarded

    async def forward(self, route: RouteSpec, request: ProxyRequest, identity: Mapping[str, str]) -> ProxyResponse:
        """Send the request to one instance of the route's service; a GET or HEAD that could not reach an
        instance is tried once more (on the next instance, if there is one). Raises ``UpstreamUnavailable``,
        ``UpstreamTimeout`` or ``ResponseTooLarge``."""
        balancer = self.balancers[route.service]
        headers = request_headers(request, identity, trust_forwarded=self.trust_forwarded)
        deadline = asyncio.get_running_loop().time() + route.timeout
        attempts = 2 if request.method in RETRYABLE_METHODS else 1
        failure: BaseException | None = None
        for _ in range(attempts):
            base = balancer.pick()
            try:
                answer = await self._send(route, base, request, headers, deadline)
            except _ConnectFailed as exc:
                balancer.failed(base)
                failure = exc.__cause__
                log.warning("upstream unreachable", service=route.service, instance=base, error=repr(failure))
                continue
            balancer.succeeded(base)
            return answer
        raise UpstreamUnavailable(route.service, f"{request.method} {request.raw_path}: {failure!r}")

    async def _send(
        self, route: RouteSpec, base: str, request: ProxyRequest, headers: CIMultiDict[str], deadline: float
    ) -> ProxyResponse:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise UpstreamTimeout(route.service, f"no time left within {route.timeout} s")
        url = URL(base + request.raw_path + (f"?{request.query}" if request.query else ""), encoded=True)
        timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=min(self.connect_timeout, remaining))
        try:
            async with self.pool.session().request(
                request.method,
                url,
                data=request.body or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,  # pass the body on exactly as encoded
            ) as upstream:
                body = await self._read(route.service, upstream)
                return ProxyResponse(upstream.status, response_headers(_decoded(upstream.raw_headers)), body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ServerDisconnectedError) as exc:
            raise _ConnectFailed from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(route.service, f"no answer within {route.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(route.service, f"broken answer: {exc!r}") from exc

    async def _read(self, service: str, upstream: aiohttp.ClientResponse) -> bytes:
        limit = self.max_response_bytes
        if upstream.content_length is not None and upstream.content_length > limit:
            raise ResponseTooLarge(service, f"answer of {upstream.content_length} bytes exceeds {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in upstream.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(service, f"answer exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

"""The proxy core: send one client request to an upstream instance and bring its answer back.

Headers stay the ASGI server's raw bytes end to end (no decoding, no per-request dicts of strings); bodies are
read whole, within the kit's request-body cap and ``max_response_bytes`` for answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from microshop_gateway.domain import Balancer
from microshop_gateway.settings import RouteSpec
from microshop_gateway.upstream import (
    Answer,
    InstancePool,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTooLarge,
)
from microshop_kit.context import outgoing_headers
from microshop_kit.errors import UpstreamError, UpstreamUnavailable
from microshop_kit.log import get_logger

log = get_logger("microshop.gateway")

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host", b"expect"}
)
#: Identity headers only the gateway may set: a client sending them is trying to pass as someone else.
FORGEABLE_IDENTITY = frozenset({b"x-user-id", b"x-user-roles", b"x-forwarded-user"})
#: Replaced by the gateway's own values (the kit's request id and a child span of the current trace).
CONTEXT = frozenset({b"x-request-id", b"traceparent"})
FORWARDED = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
#: Dropped from every request: recomputed from the body actually sent.
RECOMPUTED = frozenset({b"content-length"})
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})


class UpstreamTimeout(UpstreamError):
    """The upstream accepted the request but did not answer within the route's timeout."""


class ResponseTooLarge(UpstreamError):
    """The upstream's answer is larger than the gateway passes on."""


class BadUpstreamAnswer(UpstreamError):
    """The upstream's answer broke off or was not HTTP."""


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers the sender listed in ``Connection`` are hop-by-hop too (RFC 9110, 7.6.1)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def _is_hop_by_hop(name: bytes, named: set[bytes]) -> bool:
    return name in HOP_BY_HOP or name in named or name.startswith(b"proxy-")


def request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    identity: Mapping[str, str],
    *,
    client_host: str | None,
    scheme: str,
    trust_forwarded: bool,
) -> Headers:
    """The headers sent upstream: the client's (ASGI gives lower-case names), less hop-by-hop, forged identity
    and stale context headers, plus the request id, trace context, X-Forwarded-* and the verified identity."""
    named = _connection_named(headers)
    dropped = FORGEABLE_IDENTITY | CONTEXT | RECOMPUTED
    if not trust_forwarded:
        dropped = dropped | FORWARDED
    result: Headers = []
    chain: bytes | None = None
    proto: bytes | None = None
    for name, value in headers:
        if name in dropped or _is_hop_by_hop(name, named):
            continue
        if name == b"x-forwarded-for":
            chain = value
        elif name == b"x-forwarded-proto":
            proto = value
        else:
            result.append((name, value))
    for key, val in outgoing_headers().items():
        result.append((key.lower().encode("latin-1"), val.encode("latin-1")))
    client = (client_host or "unknown").encode("latin-1")
    result.append((b"x-forwarded-for", chain + b", " + client if chain else client))
    result.append((b"x-forwarded-proto", proto or scheme.encode("latin-1")))
    for key, val in identity.items():
        result.append((key.lower().encode("latin-1"), val.encode("latin-1")))
    return result


def response_headers(headers: Sequence[tuple[bytes, bytes]], *, keep_length: bool) -> Headers:
    """The upstream's answer headers passed to the client, names lower-cased (the kit adds its own
    X-Request-ID). Content-Length is kept only for HEAD; otherwise it is set from the body sent."""
    named = _connection_named(headers)
    result: Headers = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if _is_hop_by_hop(name, named) or name == b"x-request-id":
            continue
        if name == b"content-length" and not keep_length:
            continue
        result.append((name, value))
    return result


class Proxy:
    """Forwards requests to the instances of each upstream service, balanced round-robin."""

    def __init__(
        self,
        balancers: Mapping[str, Balancer],
        *,
        connect_timeout: float = 1.0,
        max_response_bytes: int = 10 * 1_048_576,
        trust_forwarded: bool = False,
    ) -> None:
        self.balancers = balancers
        self.max_response_bytes = max_response_bytes
        self.trust_forwarded = trust_forwarded
        self.pools: dict[str, InstancePool] = {
            url: InstancePool(url, connect_timeout=connect_timeout)
            for balancer in balancers.values()
            for url in balancer.urls
        }

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    async def forward(self, route: RouteSpec, method: str, target: bytes, headers: Headers, body: bytes) -> Answer:
        """Send the request to one instance of the route's service; a GET or HEAD that could not reach an
        instance is tried once more (on the next instance, if there is one). Raises ``UpstreamUnavailable``,
        ``UpstreamTimeout``, ``ResponseTooLarge`` or ``BadUpstreamAnswer``."""
        balancer = self.balancers[route.service]
        attempts = 2 if method in RETRYABLE_METHODS else 1
        raw_method = method.encode("ascii")
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(route.timeout):
                for _ in range(attempts):
                    base = balancer.pick()
                    try:
                        answer = await self.pools[base].request(
                            raw_method, target, headers, body, limit=self.max_response_bytes
                        )
                    except UpstreamConnectError as exc:
                        balancer.failed(base)
                        failure = exc
                        log.warning("upstream unreachable", service=route.service, instance=base, error=str(exc))
                        continue
                    balancer.succeeded(base)
                    return answer
        except TimeoutError as exc:
            raise UpstreamTimeout(route.service, f"no answer within {route.timeout} s") from exc
        except UpstreamTooLarge as exc:
            raise ResponseTooLarge(route.service, str(exc)) from exc
        except UpstreamBroken as exc:
            raise BadUpstreamAnswer(route.service, str(exc)) from exc
        raise UpstreamUnavailable(route.service, f"{method} {target.decode('latin-1')}: {failure}")

"""The proxy core: send one client request to an upstream instance and bring its answer back.

Headers stay the ASGI server's raw bytes end to end (no decoding, no per-request dicts of strings); bodies are
read whole, within the kit's request-body cap and ``max_response_bytes`` for answers.

Per upstream service: a circuit breaker (the kit's) that refuses at once while the service keeps failing, a
retry budget, and a balancer over its instances. Only failures of the service itself count against the
breaker: no connection, no answer in time, a broken answer. An HTTP answer, even a 5xx, is the service
speaking (orders answers 503 while payments is down, and cart and order history must keep working).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from microshop_gateway.domain import Balancer, RetryBudget
from microshop_gateway.metrics import GatewayMetrics
from microshop_gateway.settings import RouteSpec
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.context import outgoing_headers
from microshop_kit.errors import CircuitOpen, UpstreamError, UpstreamUnavailable
from microshop_kit.log import get_logger
from microshop_kit.wire import (
    Answer,
    InstancePool,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTooLarge,
)

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


class OpenCircuit(CircuitOpen):
    """The service's circuit is open: nothing was sent. ``retry_after`` is when probes are let through."""

    def __init__(self, service: str, retry_after: float) -> None:
        super().__init__(service, "circuit open")
        self.retry_after = retry_after


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


@dataclass(frozen=True)
class Upstream:
    """One upstream service: its instances, its circuit and its retry budget."""

    name: str
    balancer: Balancer
    breaker: CircuitBreaker
    retries: RetryBudget


@dataclass(frozen=True)
class RetryPolicy:
    #: Extra attempts of a GET or HEAD, each also needing the service's retry budget.
    attempts: int = 1
    #: Upper bound of the first retry's random wait (full jitter), doubled for each further one.
    backoff: float = 0.02


class Proxy:
    """Forwards requests to the instances of each upstream service, balanced round-robin."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        metrics: GatewayMetrics,
        *,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 1.0,
        max_response_bytes: int = 10 * 1_048_576,
        trust_forwarded: bool = False,
    ) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.max_response_bytes = max_response_bytes
        self.trust_forwarded = trust_forwarded
        self.pools: dict[str, InstancePool] = {
            url: InstancePool(url, connect_timeout=connect_timeout)
            for upstream in upstreams.values()
            for url in upstream.balancer.urls
        }

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    async def forward(self, route: RouteSpec, method: str, target: bytes, headers: Headers, body: bytes) -> Answer:
        """Send the request to an instance of the route's service within the route's timeout; a GET or HEAD
        whose instance could not be reached or broke its answer off is tried again (on the next instance) as
        the retry policy and budget allow. Raises ``OpenCircuit``, ``UpstreamUnavailable``, ``UpstreamTimeout``,
        ``ResponseTooLarge`` or ``BadUpstreamAnswer``."""
        upstream = self.upstreams[route.service]
        breaker = upstream.breaker
        if not breaker.allow():
            self.metrics.failed(upstream.name, route.prefix, "circuit_open")
            raise OpenCircuit(upstream.name, breaker.open_seconds)
        upstream.retries.request()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(route.timeout):
                answer = await self._attempts(upstream, method, target, headers, body)
        except TimeoutError as exc:
            self._failed(upstream, route, "timeout", started)
            raise UpstreamTimeout(route.service, f"no answer within {route.timeout} s") from exc
        except UpstreamTooLarge as exc:
            breaker.record_success()  # the service answered; the gateway will not pass that much on
            self.metrics.failed(upstream.name, route.prefix, "too_large", time.perf_counter() - started)
            raise ResponseTooLarge(route.service, str(exc)) from exc
        except UpstreamBroken as exc:
            self._failed(upstream, route, "broken", started)
            raise BadUpstreamAnswer(route.service, str(exc)) from exc
        except UpstreamConnectError as exc:
            self._failed(upstream, route, "unavailable", started)
            raise UpstreamUnavailable(route.service, f"{method} {target.decode('latin-1')}: {exc}") from exc
        breaker.record_success()
        self.metrics.answered(upstream.name, route.prefix, time.perf_counter() - started)
        return answer

    def _failed(self, upstream: Upstream, route: RouteSpec, kind: str, started: float) -> None:
        upstream.breaker.record_failure()
        self.metrics.failed(upstream.name, route.prefix, kind, time.perf_counter() - started)

    async def _attempts(self, upstream: Upstream, method: str, target: bytes, headers: Headers, body: bytes) -> Answer:
        raw_method = method.encode("ascii")
        balancer = upstream.balancer
        retries = self.retry.attempts if method in RETRYABLE_METHODS else 0
        attempt = 0
        while True:
            base = balancer.pick()
            try:
                answer = await self.pools[base].request(
                    raw_method, target, headers, body, limit=self.max_response_bytes
                )
            except (UpstreamConnectError, UpstreamBroken) as exc:
                balancer.failed(base)
                log.warning("upstream failed", service=upstream.name, instance=base, error=str(exc))
                if attempt >= retries:
                    raise
                allowed = upstream.retries.try_retry()
                self.metrics.retried(upstream.name, allowed=allowed)
                if not allowed:
                    raise
                attempt += 1
                await asyncio.sleep(random.uniform(0, self.retry.backoff * 2 ** (attempt - 1)))
                continue
            balancer.succeeded(base)
            return answer

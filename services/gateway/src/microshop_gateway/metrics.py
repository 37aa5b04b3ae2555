"""The gateway's own Prometheus metrics, per route and upstream, next to the kit's per-route request metrics.

prometheus_client's ``labels()`` costs microseconds a call, so every labelled child the proxy path touches is
looked up once and kept (``_children``); gauges of state (circuits, instance readiness) are read at scrape time
through ``set_function`` and cost nothing per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from microshop_kit.breaker import CircuitBreaker

#: Circuit states as gauge values.
CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        route = ["upstream", "route"]
        self.requests = Counter(
            "gateway_upstream_requests_total", "Requests the gateway sent to an upstream", route, registry=registry
        )
        self.errors = Counter(
            "gateway_upstream_errors_total",
            "Requests that got no usable upstream answer (kind: unavailable, timeout, broken, too_large, circuit_open)",
            [*route, "kind"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time from sending to an upstream to its whole answer (retries included)",
            route,
            registry=registry,
            buckets=_BUCKETS,
        )
        self.retries = Counter(
            "gateway_upstream_retries_total",
            "Retries of GET/HEAD (outcome: sent, or refused by the retry budget)",
            ["upstream", "outcome"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_total",
            "Requests refused with 429 (scope: address or account)",
            ["route", "limit_class", "scope"],
            registry=registry,
        )
        self.circuit = Gauge(
            "gateway_circuit_state",
            "Circuit of an upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            registry=registry,
        )
        self.instance_ready = Gauge(
            "gateway_upstream_instance_ready",
            "1 while an instance passes its readiness probe (it is in the rotation)",
            ["upstream", "instance"],
            registry=registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._answered: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def answered(self, upstream: str, route: str, seconds: float) -> None:
        pair = self._answered.get((upstream, route))
        if pair is None:
            pair = self._answered[(upstream, route)] = (
                self.requests.labels(upstream, route),
                self.duration.labels(upstream, route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def failed(self, upstream: str, route: str, kind: str, seconds: float | None = None) -> None:
        self._child(self.requests, upstream, route).inc()
        self._child(self.errors, upstream, route, kind).inc()
        if seconds is not None:
            self._child(self.duration, upstream, route).observe(seconds)

    def retried(self, upstream: str, *, allowed: bool) -> None:
        self._child(self.retries, upstream, "sent" if allowed else "refused").inc()

    def refused(self, route: str, limit_class: str, scope: str) -> None:
        self._child(self.rate_limited, route, limit_class, scope).inc()

    def watch_circuit(self, upstream: str, breaker: CircuitBreaker) -> None:
        self.circuit.labels(upstream).set_function(lambda: CIRCUIT_VALUES[breaker.state])

    def watch_instance(self, upstream: str, instance: str, ready: Callable[[], bool]) -> None:
        self.instance_ready.labels(upstream, instance).set_function(lambda: 1.0 if ready() else 0.0)

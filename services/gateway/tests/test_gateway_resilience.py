"""Failure isolation: a circuit per upstream service, retries of GET/HEAD only within a retry budget, timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from microshop_gateway.domain import RetryBudget
from microshop_gateway.settings import DEFAULT_ROUTES, RouteSpec
from microshop_kit.testing import JwtIssuer

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any

#: A circuit that opens after 3 failures of 3 calls and half-opens after 0.5 s; no rate limits in the way.
BREAKER = {
    "breaker_min_calls": 3,
    "breaker_window_size": 3,
    "breaker_open_seconds": 0.5,
    "breaker_half_open_probes": 1,
    "rate_limiting": False,
}


def routes_with_timeout(service: str, timeout: float) -> list[RouteSpec]:
    return [r.model_copy(update={"timeout": timeout}) if r.service == service else r for r in DEFAULT_ROUTES]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_budget_allows_a_share_of_requests_plus_a_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10, min_per_second=0.1, clock=clock)  # floor: 1 retry per window
    for _ in range(10):
        budget.request()

    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]  # 0.2 * 10 + 1
    clock.now += 10  # the window has passed: those requests and retries no longer count
    assert [budget.try_retry() for _ in range(2)] == [True, False]


async def test_an_open_circuit_answers_503_naming_the_service_without_calling_it(
    make_gateway: GatewayFactory, upstreams: Upstreams, issuer: JwtIssuer
) -> None:
    payments = upstreams["payments"]
    payments.drop = True
    headers = issuer.headers("u-1")
    async with make_gateway(**BREAKER) as gateway:
        failing = [await gateway.post("/api/v1/payment-methods", json={}, headers=headers) for _ in range(3)]
        calls = len(payments.calls)
        started = time.perf_counter()
        refused = await gateway.post("/api/v1/payment-methods", json={}, headers=headers)
        elapsed = time.perf_counter() - started
        other_service = await gateway.get("/api/v1/products")
        metrics = (await gateway.get("/metrics")).text

    assert [r.status_code for r in failing] == [503] * 3
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["service"] == "payments"
    assert refused.json()["circuit"] == "open"
    assert "circuit open" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert elapsed < 0.5
    assert len(payments.calls) == calls  # nothing was sent
    assert other_service.status_code == 200
    assert 'gateway_circuit_state{upstream="payments"} 2.0' in metrics
    assert 'gateway_circuit_state{upstream="products"} 0.0' in metrics


async def test_the_circuit_half_opens_and_closes_once_the_service_answers(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    products = upstreams["products"]
    products.drop = True
    async with make_gateway(**BREAKER, retry_attempts=0) as gateway:
        for _ in range(3):
            await gateway.get("/api/v1/products")
        assert (await gateway.get("/api/v1/products")).json()["circuit"] == "open"
        products.drop = False
        await asyncio.sleep(0.6)
        answers = [await gateway.get("/api/v1/products") for _ in range(3)]

    assert [a.status_code for a in answers] == [200] * 3


async def test_answers_of_the_service_even_5xx_do_not_open_the_circuit(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async with make_gateway(**BREAKER) as gateway:
        answers = [await gateway.get("/api/v1/products/fail") for _ in range(6)]

    assert [a.status_code for a in answers] == [503] * 6
    assert all("circuit" not in a.json() for a in answers)
    assert len(upstreams["products"].calls) == 6  # every one reached the service, none was retried


async def test_slow_upstream_gives_504_within_the_route_timeout_without_retries(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    both = f"{upstreams['products'].url},{upstreams['products-2'].url}"
    settings = {"routes": routes_with_timeout("products", 0.3), "products_url": both, "rate_limiting": False}
    async with make_gateway(**settings) as gateway:
        started = time.perf_counter()
        answers = await asyncio.gather(*(gateway.get("/api/v1/products/slow") for _ in range(10)))
        elapsed = time.perf_counter() - started

    assert [a.status_code for a in answers] == [504] * 10
    assert {a.json()["service"] for a in answers} == {"products"}
    assert 0.3 <= elapsed < 1.5
    assert len(upstreams["products"].calls) + len(upstreams["products-2"].calls) == 10  # one attempt each


async def test_retries_of_a_failing_service_stay_within_the_retry_budget(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    for name in ("products", "products-2"):
        upstreams[name].drop = True
    settings = {
        "products_url": f"{upstreams['products'].url},{upstreams['products-2'].url}",
        "breaker_min_calls": 1000,
        "breaker_window_size": 1000,  # keep the circuit closed: this test is about retries
        "retry_attempts": 3,
        "retry_budget_ratio": 0.2,
        "retry_budget_min_per_second": 0,
        "retry_backoff_seconds": 0,
        "rate_limiting": False,
    }
    async with make_gateway(**settings) as gateway:
        answers = [await gateway.get("/api/v1/products") for _ in range(20)]
        metrics = (await gateway.get("/metrics")).text

    attempts = len(upstreams["products"].calls) + len(upstreams["products-2"].calls)
    assert {a.status_code for a in answers} == {503}
    assert 20 < attempts <= 24  # at most 20 % more than the requests, though each could have tried 4 times
    assert 'gateway_upstream_retries_total{outcome="refused",upstream="products"}' in metrics


async def test_upstream_requests_errors_and_durations_are_measured_per_route(
    make_gateway: GatewayFactory, dead_url: str, issuer: JwtIssuer
) -> None:
    async with make_gateway(orders_url=dead_url) as gateway:
        await gateway.get("/api/v1/products")
        await gateway.get("/api/v1/orders", headers=issuer.headers("u-1"))
        metrics = (await gateway.get("/metrics")).text

    labels = 'route="/api/v1/products",upstream="products"'
    assert f"gateway_upstream_requests_total{{{labels}}} 1.0" in metrics
    assert f"gateway_upstream_duration_seconds_count{{{labels}}} 1.0" in metrics
    failed = 'kind="unavailable",route="/api/v1/orders",upstream="orders"'
    assert f"gateway_upstream_errors_total{{{failed}}} 1.0" in metrics
    assert 'gateway_upstream_instance_ready{instance="' + dead_url + '",upstream="orders"} 0.0' in metrics


async def test_head_is_retried_like_get(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    upstreams["products"].drop = True
    both = f"{upstreams['products'].url},{upstreams['products-2'].url}"
    async with make_gateway(products_url=both) as gateway:
        response = await gateway.head("/api/v1/products")

    assert response.status_code == 200
    assert [call["method"] for call in upstreams["products-2"].calls] == ["HEAD"]


async def test_answers_too_large_to_pass_on_do_not_open_the_circuit(make_gateway: GatewayFactory) -> None:
    async with make_gateway(**BREAKER, max_response_bytes=1024) as gateway:
        answers = [await gateway.post("/api/v1/users", content=b"x" * 2000) for _ in range(4)]

    assert [a.status_code for a in answers] == [502] * 4
    assert [a.json()["type"] for a in answers] == ["/problems/upstream-too-large"] * 4

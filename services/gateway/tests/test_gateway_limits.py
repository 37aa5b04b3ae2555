"""Rate limits: per client address and per account, per class of route, in memory and shared through Redis."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from microshop_gateway.domain import gcra
from microshop_gateway.limits import MemoryStore
from microshop_gateway.settings import Budget, RateLimitClass
from microshop_kit.testing import JwtIssuer, require_server

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any

REDIS_URL = "redis://127.0.0.1:6379/0"


def limits(default: int = 1000, auth: int = 1000, checkout: int = 1000, account: int = 1000) -> dict[str, Any]:
    """Settings with small budgets (per 60 s) and no exempt network (test clients are on loopback)."""
    return {
        "rate_limit_exempt_networks": (),
        "rate_limits": {
            "default": RateLimitClass(
                per_address=Budget(requests=default, seconds=60), per_account=Budget(requests=account, seconds=60)
            ),
            "auth": RateLimitClass(per_address=Budget(requests=auth, seconds=60)),
            "checkout": RateLimitClass(
                per_address=Budget(requests=checkout, seconds=60), per_account=Budget(requests=account, seconds=60)
            ),
        },
    }


def test_gcra_allows_the_burst_then_one_request_per_interval() -> None:
    tat: float | None = None
    for _ in range(3):
        tat, wait = gcra(tat, 100.0, interval=2.0, capacity=3)
        assert wait == 0
    refused_tat, wait = gcra(tat, 100.0, interval=2.0, capacity=3)
    assert (refused_tat, wait) == (tat, 2.0)
    assert gcra(tat, 102.0, interval=2.0, capacity=3)[1] == 0


async def test_memory_store_counts_each_key_apart_and_forgets_full_buckets() -> None:
    now = [0.0]
    store = MemoryStore(max_keys=2, clock=lambda: now[0])
    budget = Budget(requests=2, seconds=10)

    assert [await store.hit("a", budget) for _ in range(3)] == [None, None, 5.0]
    assert await store.hit("b", budget) is None
    now[0] = 100.0
    assert await store.hit("c", budget) is None  # three keys: the expired ones are swept
    assert len(store._tats) == 1


async def test_a_burst_above_the_address_budget_gets_429_with_retry_after(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async with make_gateway(**limits(default=5)) as gateway:
        statuses = [(await gateway.get("/api/v1/products")).status_code for _ in range(5)]
        refused = await gateway.get("/api/v1/products")
        other_class = await gateway.post("/api/v1/auth/token", json={})

    assert statuses == [200] * 5
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/rate-limited"
    assert refused.json()["scope"] == "address"
    assert 11 <= int(refused.headers["retry-after"]) <= 12  # 60 s / 5 requests
    assert len(upstreams["products"].calls) == 5
    assert other_class.status_code == 200  # sign-in has a budget of its own


async def test_sign_in_and_checkout_have_budgets_of_their_own(make_gateway: GatewayFactory, issuer: JwtIssuer) -> None:
    async with make_gateway(**limits(auth=2, checkout=1)) as gateway:
        sign_ins = [(await gateway.post("/api/v1/auth/token", json={})).status_code for _ in range(3)]
        headers = issuer.headers("u-1")
        checkouts = [(await gateway.post("/api/v1/orders", json={}, headers=headers)).status_code for _ in range(2)]
        history = await gateway.get("/api/v1/orders", headers=headers)

    assert sign_ins == [200, 200, 429]
    assert checkouts == [200, 429]
    assert history.status_code == 200  # the same prefix, but GET is not a checkout


async def test_the_account_budget_follows_the_verified_user_not_the_address(
    make_gateway: GatewayFactory, issuer: JwtIssuer
) -> None:
    async with make_gateway(**limits(account=2)) as gateway:
        first = [(await gateway.get("/api/v1/cart", headers=issuer.headers("u-1"))).status_code for _ in range(3)]
        forged = await gateway.get("/api/v1/cart", headers={**issuer.headers("u-2"), "X-User-Id": "u-1"})
        refused = await gateway.get("/api/v1/cart", headers=issuer.headers("u-1"))

    assert first == [200, 200, 429]
    assert forged.status_code == 200
    assert refused.json()["scope"] == "account"


async def test_a_bad_token_flood_is_stopped_by_the_address_budget(make_gateway: GatewayFactory) -> None:
    async with make_gateway(**limits(default=3)) as gateway:
        statuses = [
            (await gateway.get("/api/v1/cart", headers={"Authorization": "Bearer x"})).status_code for _ in range(4)
        ]

    assert statuses == [401, 401, 401, 429]


async def test_loopback_is_exempt_from_address_budgets_by_default(make_gateway: GatewayFactory) -> None:
    settings = limits(default=2)
    del settings["rate_limit_exempt_networks"]
    async with make_gateway(**settings) as gateway:
        statuses = {(await gateway.get("/api/v1/products")).status_code for _ in range(5)}

    assert statuses == {200}


async def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(make_gateway: GatewayFactory) -> None:
    async with make_gateway(**limits(default=2), trust_forwarded_headers=True) as gateway:

        def from_client(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": f"9.9.9.9, {address}"}  # the first entry is the client's own claim

        one = [(await gateway.get("/api/v1/products", headers=from_client("1.2.3.4"))).status_code for _ in range(3)]
        other = await gateway.get("/api/v1/products", headers=from_client("5.6.7.8"))

    assert one == [200, 200, 429]
    assert other.status_code == 200


async def test_rate_limiting_can_be_turned_off(make_gateway: GatewayFactory) -> None:
    async with make_gateway(**limits(default=1), rate_limiting=False) as gateway:
        statuses = {(await gateway.get("/api/v1/products")).status_code for _ in range(3)}

    assert statuses == {200}


def test_settings_refuse_a_route_naming_an_unknown_class() -> None:
    from pydantic import ValidationError

    from microshop_gateway import GatewaySettings

    with pytest.raises(ValidationError, match="rate-limit class 'bulk'"):
        GatewaySettings(routes=[{"prefix": "/api/v1/products", "service": "products", "rate_limit": "bulk"}])  # type: ignore[list-item]


async def test_two_gateways_sharing_redis_enforce_one_budget(make_gateway: GatewayFactory) -> None:
    require_server("127.0.0.1", 6379, "Redis")
    shared = {**limits(default=4), "redis_url": REDIS_URL, "redis_key_prefix": f"test:{secrets.token_hex(6)}:"}
    async with make_gateway(**shared) as first, make_gateway(**shared) as second:
        answers = [await gateway.get("/api/v1/products") for gateway in (first, second, first, second, first, second)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 429, 429]
    assert 14 <= int(answers[-1].headers["retry-after"]) <= 15  # 60 s / 4 requests, by Redis's clock


async def test_account_budget_is_shared_through_redis(make_gateway: GatewayFactory, issuer: JwtIssuer) -> None:
    require_server("127.0.0.1", 6379, "Redis")
    prefix = f"test:{secrets.token_hex(6)}:"
    shared = {**limits(default=100, account=3), "redis_url": REDIS_URL, "redis_key_prefix": prefix}
    async with make_gateway(**shared) as first, make_gateway(**shared) as second:
        headers = issuer.headers("u-1")
        answers = [await gateway.get("/api/v1/cart", headers=headers) for gateway in (first, second, first, second)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].json()["scope"] == "account"
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 20


async def test_redis_unreachable_lets_requests_through_with_a_warning(
    make_gateway: GatewayFactory, dead_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = dead_url.rsplit(":", 1)[1]
    async with make_gateway(**limits(default=1), redis_url=f"redis://127.0.0.1:{port}/0") as gateway:
        statuses = await asyncio.gather(*(gateway.get("/api/v1/products") for _ in range(3)))

    assert {response.status_code for response in statuses} == {200}
    assert capsys.readouterr().err.count("rate limits not enforced: redis unreachable") == 1


async def test_rate_limited_requests_are_counted(make_gateway: GatewayFactory) -> None:
    async with make_gateway(**limits(default=1)) as gateway:
        await gateway.get("/api/v1/products")
        await gateway.get("/api/v1/products")
        metrics = (await gateway.get("/metrics")).text

    assert 'gateway_rate_limited_total{limit_class="default",route="/api/v1/products",scope="address"} 1.0' in metrics

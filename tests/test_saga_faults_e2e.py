"""The checkout saga under faults, through the gateway: orders killed at each step, payments down, a hot SKU.

Runs on the embedded defaults (SQLite, embedded NATS) and on PostgreSQL with the system NATS. The orders process
gets short leases and timers so that a test waits seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from microshop_launcher import Platform

from .conftest import DECLINED_CARD, GOOD_CARD, UNFINISHED, Shop, _platform_for, check_saga_invariants

pytestmark = pytest.mark.e2e

ShopFor = Callable[[Platform], Shop]
FAST_ORDERS = {
    "ORDERS_LEASE_SECONDS": "2",
    "ORDERS_CHECKOUT_BUDGET_SECONDS": "3",
    "ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2",
    "ORDERS_BREAKER_OPEN_SECONDS": "2",
}
HOT_SKU = "COF-003"


@pytest.fixture(scope="module", params=["sqlite+nats", "postgres+nats"])
def fault_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from _platform_for(request.param, tmp_path_factory.mktemp(request.param), FAST_ORDERS)


def _buyer(platform: Platform, shop_for: ShopFor, card: str = GOOD_CARD) -> tuple[Shop, str]:
    shop = shop_for(platform)
    shop.sign_up()
    shop.sign_in()
    products = [p for p in shop.products(limit=50) if int(p["available"]) >= 5 and p["sku"] != HOT_SKU]
    shop.fill_cart([(str(products[uuid.uuid4().int % len(products)]["sku"]), 1)])
    return shop, shop.card(card)


def _place_all(platform: Platform, buyers: list[tuple[Shop, str]]) -> list[httpx.Response]:
    """Every buyer places their order at the same time."""
    body = {"name": "A", "line1": "1 Road", "city": "Town", "postal_code": "1", "country": "GB"}

    async def place() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(buyers))
        async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/orders",
                            json={"shipping_address": body, "payment_method_id": method},
                            headers={**shop.auth, "Idempotency-Key": str(uuid.uuid4())},
                        )
                        for shop, method in buyers
                    )
                )
            )

    return asyncio.run(place())


# The points where the saga is stopped: after each upstream call answered but before its result is saved (the
# nastiest moment: the effect happened, the order does not know), and before the confirmation is written.
CONFIRMING_POINTS = ["after:users", "after:reserve", "after:charge", "after:commit", "before:confirm"]
COMPENSATING_POINTS = ["after:payment_cancel", "after:release"]


@pytest.mark.parametrize("point", CONFIRMING_POINTS + COMPENSATING_POINTS)
def test_orders_killed_at_each_saga_step_still_finishes_every_order(
    fault_platform: Platform, shop_for: ShopFor, point: str
) -> None:
    card = DECLINED_CARD if point in COMPENSATING_POINTS else GOOD_CARD
    buyers = [_buyer(fault_platform, shop_for, card) for _ in range(3)]
    fault_platform.config.extra_env["ORDERS_FAULT_HOLD_AT"] = point
    try:
        fault_platform.restart("orders")
        answers = _place_all(fault_platform, buyers)
        assert [a.status_code for a in answers] == [202] * 3, [a.text for a in answers]
        fault_platform.kill("orders")  # SIGKILL while every saga is stopped at the point
    finally:
        del fault_platform.config.extra_env["ORDERS_FAULT_HOLD_AT"]
    fault_platform.restart("orders")
    ids = [a.json()["id"] for a in answers]
    pairs = zip(buyers, ids, strict=True)
    finals = [shop.wait_order(order_id, timeout=60, until=UNFINISHED) for (shop, _), order_id in pairs]
    expected = "REJECTED" if card == DECLINED_CARD else "CONFIRMED"
    assert [order["status"] for order in finals] == [expected] * 3, finals
    check_saga_invariants(fault_platform, ids)


def test_payments_down_fails_checkout_fast_and_the_rest_of_the_shop_keeps_working(
    fault_platform: Platform, shop_for: ShopFor
) -> None:
    shop, method = _buyer(fault_platform, shop_for)
    fault_platform.kill("payments")
    try:
        early: list[dict[str, Any]] = []
        for _ in range(10):
            started = time.perf_counter()
            response = shop.place_order(method)
            assert time.perf_counter() - started < 3.5, "no checkout hangs on a dead payments service"
            if response.status_code == 503:
                break
            assert response.status_code == 202, response.text
            early.append(response.json())
        started = time.perf_counter()
        refused = shop.place_order(method)
        assert time.perf_counter() - started < 0.5, "an open circuit answers at once"
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"] == "/problems/payments-unavailable"
        assert "circuit open" in refused.json()["detail"]
        assert shop.products(limit=5), "browsing works"
        assert shop.http.get("/api/v1/products", params={"q": "coffee"}).status_code == 200, "search works"
        assert shop.fill_cart([(str(shop.products(limit=5)[0]["sku"]), 1)])["lines"], "the cart works"
    finally:
        fault_platform.restart("payments")
    deadline = time.monotonic() + 30
    while (response := shop.place_order(method)).status_code not in (201, 202) and time.monotonic() < deadline:
        # The circuit half-opens after ORDERS_BREAKER_OPEN_SECONDS; a shopper retrying that long meets the
        # gateway's per-account checkout budget, so wait as its Retry-After says.
        assert response.status_code in (429, 503), response.text
        time.sleep(float(response.headers.get("Retry-After", 0.5)) if response.status_code == 429 else 0.5)
    assert response.status_code in (201, 202), response.text
    assert shop.wait_order(response.json()["id"], timeout=60, until=UNFINISHED)["status"] == "CONFIRMED"
    for order in early:  # taken before the circuit opened: the recovery loop finishes them
        assert shop.wait_order(order["id"], timeout=60, until=UNFINISHED)["status"] == "CONFIRMED"
    check_saga_invariants(fault_platform, [response.json()["id"], *(o["id"] for o in early)])


def test_200_checkouts_for_50_units_confirm_exactly_50(fault_platform: Platform) -> None:
    asyncio.run(_set_on_hand(fault_platform, HOT_SKU, 50))
    tokens = asyncio.run(_customers(fault_platform, 200))
    answers = asyncio.run(_checkout_all(fault_platform, tokens))
    assert all(status in (201, 202) for status, _ in answers), answers
    ids = [body["id"] for _, body in answers]
    finals = asyncio.run(_wait_all(fault_platform, list(zip(tokens, ids, strict=True))))
    statuses = [order["status"] for order in finals]
    assert (statuses.count("CONFIRMED"), statuses.count("REJECTED")) == (50, 150)
    assert all("Not enough stock" in o["reason"] for o in finals if o["status"] == "REJECTED")
    state = check_saga_invariants(fault_platform, ids)
    captured = [p for order_id, p in state["payments"].items() if order_id in ids and p["status"] == "succeeded"]
    assert len(captured) == 50
    assert state["stock"][HOT_SKU]["on_hand"] == 0
    assert state["stock"][HOT_SKU]["reserved"] == 0


async def _set_on_hand(platform: Platform, sku: str, units: int) -> None:
    db = await platform.open_database("products")
    try:
        await db.execute(
            "UPDATE stock SET on_hand = :units, received = :units + reserved + sold WHERE sku = :sku",
            {"sku": sku, "units": units},
        )
    finally:
        await db.close()


async def _customers(platform: Platform, count: int) -> list[tuple[str, str]]:
    """``count`` signed-in customers, each with a card and one unit of the hot SKU in the cart."""
    gate = asyncio.Semaphore(8)
    card = {"type": "card", "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}

    async def one(client: httpx.AsyncClient) -> tuple[str, str]:
        email, password = f"hot-{uuid.uuid4().hex[:12]}@example.com", "correct horse battery staple"
        async with gate:
            await client.post("/api/v1/users", json={"email": email, "password": password, "name": "Hot Buyer"})
            signed = await client.post("/api/v1/auth/token", json={"email": email, "password": password})
        auth = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        method = (await client.post("/api/v1/payment-methods", json=card, headers=auth)).json()["id"]
        cart = {"lines": [{"sku": HOT_SKU, "quantity": 1}]}
        assert (await client.put("/api/v1/cart", json=cart, headers=auth)).status_code == 200
        return auth["Authorization"], method

    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


async def _checkout_all(platform: Platform, customers: list[tuple[str, str]]) -> list[tuple[int, Any]]:
    address = {"name": "A", "line1": "1 Road", "city": "Town", "postal_code": "1", "country": "GB"}
    limits = httpx.Limits(max_connections=len(customers))
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/orders",
                    json={"shipping_address": address, "payment_method_id": method},
                    headers={"Authorization": token, "Idempotency-Key": str(uuid.uuid4())},
                )
                for token, method in customers
            )
        )
    return [(r.status_code, r.json()) for r in responses]


async def _wait_all(platform: Platform, orders: list[tuple[tuple[str, str], str]]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60) as client:

        async def final(token: str, order_id: str) -> dict[str, Any]:
            deadline = time.monotonic() + 90
            while True:
                order: dict[str, Any] = (
                    await client.get(f"/api/v1/orders/{order_id}", headers={"Authorization": token})
                ).json()
                if order["status"] not in UNFINISHED or time.monotonic() > deadline:
                    return order
                await asyncio.sleep(0.3)

        return list(await asyncio.gather(*(final(token, order_id) for (token, _), order_id in orders)))

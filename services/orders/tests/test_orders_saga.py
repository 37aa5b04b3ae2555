"""Orders API and checkout saga against real HTTP stand-ins for users, products and payments."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from microshop_orders.testing import ADDRESS, Harness, Upstreams, run_harness


async def test_order_is_confirmed_through_every_step(shop: Harness) -> None:
    assert (await shop.cart(("MUG-1", 2), ("TEA-1", 1))).json()["total"] == 2 * 1200 + 650
    response = await shop.order()
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CONFIRMED"
    assert order["total"] == 3050
    assert shop.fake.calls == ["user", "reserve", "charge", "commit"]
    assert shop.outbox_types() == ["order.confirmed.v1"]
    assert (await shop.client.get("/api/v1/cart", headers=shop.auth)).json()["lines"] == []


async def test_declined_card_compensates_in_reverse(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    order = (await shop.order("pm_declined")).json()
    assert order["status"] == "REJECTED"
    assert "declined" in order["reason"]
    assert shop.fake.calls == ["user", "reserve", "charge", "cancel", "release"]
    assert shop.outbox_types() == ["order.rejected.v1"]
    assert len((await shop.client.get("/api/v1/cart", headers=shop.auth)).json()["lines"]) == 1


async def test_out_of_stock_rejects_without_charging(shop: Harness) -> None:
    await shop.cart(("TEA-1", 1))
    shop.fake.stock["TEA-1"] = 0
    order = (await shop.order()).json()
    assert order["status"] == "REJECTED"
    assert "TEA-1" in order["reason"]
    assert "charge" not in shop.fake.calls


async def test_same_key_replays_and_different_body_is_refused(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    key = str(uuid.uuid4())
    first = await shop.order(key=key)
    again = await shop.order(key=key)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    other = await shop.order("pm_other", key=key)
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert shop.fake.calls.count("charge") == 1
    listed = (await shop.client.get("/api/v1/orders", headers=shop.auth)).json()
    assert listed["total"] == 1


async def test_finished_keys_are_forgotten_after_their_ttl_and_in_flight_ones_kept(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    key = str(uuid.uuid4())
    first = await shop.order(key=key)
    store = shop.app.state.orders.orders
    with sqlite3.connect(shop.db_path) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, state, created_at) "
            "VALUES ('someone', 'k', 'h', 'o-in-flight', 'in_flight', '2000-01-01T00:00:00+00:00')"
        )

    assert await store.prune_keys(datetime.now(UTC) - timedelta(hours=24)) == 0
    assert (await shop.order(key=key)).json() == first.json()
    assert await store.prune_keys(datetime.now(UTC) + timedelta(seconds=1)) == 1
    with sqlite3.connect(shop.db_path) as conn:
        left = conn.execute("SELECT key, state FROM idempotency_keys").fetchall()
    assert left == [("k", "in_flight")]
    assert (await shop.client.get(f"/api/v1/orders/{first.json()['id']}", headers=shop.auth)).status_code == 200


async def test_changed_price_is_shown_not_charged(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    shop.fake.prices["MUG-1"] = 1500
    cart = (await shop.client.get("/api/v1/cart", headers=shop.auth)).json()
    assert cart["lines"][0]["price_changed"] is True
    refused = await shop.order()
    assert refused.status_code == 409
    assert refused.json()["changes"] == [{"sku": "MUG-1", "old_price": 1200, "new_price": 1500}]
    accepted = await shop.order()
    assert accepted.json()["total"] == 1500


async def test_payments_outage_answers_202_then_recovery_confirms(
    tmp_path: Path, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    fake.payments_down = True
    async for shop in run_harness(tmp_path, url, fake, checkout_budget_seconds=0.3):
        await shop.cart(("MUG-1", 1))
        response = await shop.order()
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "PENDING"
        location = response.headers["location"]
        fake.payments_down = False
        for _ in range(200):
            order = (await shop.client.get(location, headers=shop.auth)).json()
            if order["status"] != "PENDING":
                break
            await asyncio.sleep(0.1)
        assert order["status"] == "CONFIRMED"


async def test_saga_that_cannot_finish_in_time_is_compensated(tmp_path: Path, upstreams: tuple[Upstreams, str]) -> None:
    fake, url = upstreams
    fake.payments_down = True
    async for shop in run_harness(tmp_path, url, fake, checkout_budget_seconds=0.2, saga_timeout_seconds=0.5):
        await shop.cart(("MUG-1", 1))
        order_id = (await shop.order()).json()["id"]
        for _ in range(100):
            order = (await shop.client.get(f"/api/v1/orders/{order_id}", headers=shop.auth)).json()
            if order["status"] != "PENDING":
                break
            await asyncio.sleep(0.1)
        assert order["status"] == "REJECTED"
        assert fake.charges[order_id] == "canceled", "a charge whose answer was lost is cancelled"
        assert fake.reservations[order_id] == "release"


async def test_customers_cannot_see_each_others_orders(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    order_id = (await shop.order()).json()["id"]
    stranger = shop.issuer.headers(str(uuid.uuid4()))
    response = await shop.client.get(f"/api/v1/orders/{order_id}", headers=stranger)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        ({"shipping_address": ADDRESS, "payment_method_id": "pm_x"}, {}, 400, "Idempotency-Key"),
        (
            {"shipping_address": ADDRESS, "payment_method_id": "pm_x", "status": "CONFIRMED"},
            {"Idempotency-Key": "k"},
            422,
            "status",
        ),
        (
            {"shipping_address": {**ADDRESS, "country": "Britain"}, "payment_method_id": "pm_x"},
            {"Idempotency-Key": "k"},
            422,
            "country",
        ),
    ],
)
async def test_bad_order_requests_name_the_field(
    shop: Harness, body: dict[str, Any], headers: dict[str, str], status: int, field: str
) -> None:
    response = await shop.client.post("/api/v1/orders", json=body, headers={**shop.auth, **headers})
    assert response.status_code == status, response.text
    assert field in json.dumps(response.json()["errors"])


async def test_cart_refuses_unknown_products_and_bad_quantities(shop: Harness) -> None:
    unknown = await shop.cart(("NOPE-1", 1))
    assert unknown.status_code == 422
    assert unknown.json()["skus"] == ["NOPE-1"]
    negative = await shop.cart(("MUG-1", -2))
    assert negative.status_code == 422
    assert "quantity" in json.dumps(negative.json()["errors"])

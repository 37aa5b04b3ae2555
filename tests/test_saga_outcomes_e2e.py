"""Every payment outcome of the checkout saga end to end through the gateway, with stock and money checked after.

Runs on the embedded defaults (SQLite, embedded NATS) and on PostgreSQL with the system NATS and with RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from microshop_launcher import Platform

from .conftest import (
    DECLINED_CARD,
    EXPIRED_CARD,
    GOOD_CARD,
    INCORRECT_CVC_CARD,
    INSUFFICIENT_FUNDS_CARD,
    PROCESSING_ERROR_CARD,
    THREE_D_SECURE_CARD,
    UNFINISHED,
    Shop,
    check_saga_invariants,
)

pytestmark = pytest.mark.e2e

ShopFor = Callable[[Platform], Shop]


def _buyer(platform: Platform, shop_for: ShopFor) -> Shop:
    shop = shop_for(platform)
    shop.sign_up()
    shop.sign_in()
    return shop


def _sku(shop: Shop, units: int = 5) -> str:
    products = [p for p in shop.products(limit=50) if int(p["available"]) >= units]
    assert products, "the seeded catalog should have products in stock"
    return str(products[uuid.uuid4().int % len(products)]["sku"])


@pytest.mark.parametrize(
    ("card", "status", "code", "reason"),
    [
        (GOOD_CARD, "CONFIRMED", None, None),
        (DECLINED_CARD, "REJECTED", "card_declined", "declined"),
        (INSUFFICIENT_FUNDS_CARD, "REJECTED", "insufficient_funds", "insufficient funds"),
        (EXPIRED_CARD, "REJECTED", "expired_card", "expired"),
        (INCORRECT_CVC_CARD, "REJECTED", "incorrect_cvc", "security code"),
        (PROCESSING_ERROR_CARD, "REJECTED", None, "could not process your payment"),
    ],
)
def test_each_test_card_ends_as_promised(
    any_platform: Platform, shop_for: ShopFor, card: str, status: str, code: str | None, reason: str | None
) -> None:
    shop = _buyer(any_platform, shop_for)
    sku = _sku(shop)
    before = shop.availability(sku)[sku]
    shop.fill_cart([(sku, 2)])
    response = shop.place_order(shop.card(card))
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == status, order
    if reason is not None:
        assert reason in order["reason"], order["reason"]
    assert shop.availability(sku)[sku] == before - (2 if status == "CONFIRMED" else 0)
    state = check_saga_invariants(any_platform, [order["id"]])
    payment = state["payments"][order["id"]]
    if status == "CONFIRMED":
        assert payment["status"] in ("succeeded", "captured")
    else:
        assert payment["status"] == "canceled", payment
        assert code is None or payment.get("code") == code, payment


@pytest.mark.parametrize("method", ["3ds-card", "paypal"])
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_payment_needing_the_customer_waits_then_follows_their_decision(
    any_platform: Platform, shop_for: ShopFor, method: str, decision: str
) -> None:
    shop = _buyer(any_platform, shop_for)
    sku = _sku(shop)
    before = shop.availability(sku)[sku]
    shop.fill_cart([(sku, 1)])
    method_id = shop.card(THREE_D_SECURE_CARD) if method == "3ds-card" else shop.paypal()
    response = shop.place_order(method_id)
    assert response.status_code == 202, response.text
    waiting = response.json()
    assert waiting["status"] == "AWAITING_PAYMENT"
    assert waiting["next_action"]["type"] == "redirect_to_url"
    assert shop.availability(sku)[sku] == before - 1, "the stock is held while the customer decides"
    payment_id = waiting["next_action"]["url"].rsplit("/", 1)[-1]

    decided = shop.decide_payment(payment_id, decision)
    assert decided.status_code == 200, decided.text
    order = shop.wait_order(waiting["id"], timeout=30, until=UNFINISHED)
    if decision == "approve":
        assert order["status"] == "CONFIRMED", order
        assert shop.availability(sku)[sku] == before - 1
    else:
        assert order["status"] == "REJECTED", order
        assert "not approved" in order["reason"]
        assert shop.availability(sku)[sku] == before
    assert order["next_action"] is None
    check_saga_invariants(any_platform, [order["id"]])


def test_cancelling_while_the_payment_waits_releases_the_stock(any_platform: Platform, shop_for: ShopFor) -> None:
    shop = _buyer(any_platform, shop_for)
    sku = _sku(shop)
    before = shop.availability(sku)[sku]
    shop.fill_cart([(sku, 1)])
    waiting = shop.place_order(shop.card(THREE_D_SECURE_CARD)).json()
    assert waiting["status"] == "AWAITING_PAYMENT"
    response = shop.cancel_order(waiting["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert shop.availability(sku)[sku] == before
    state = check_saga_invariants(any_platform, [waiting["id"]])
    assert state["payments"][waiting["id"]]["status"] == "canceled", "a cancelled order cannot be paid later"


def test_cancelling_a_confirmed_order_refunds_and_restocks(any_platform: Platform, shop_for: ShopFor) -> None:
    shop = _buyer(any_platform, shop_for)
    sku = _sku(shop)
    before = shop.availability(sku)[sku]
    shop.fill_cart([(sku, 2)])
    order = shop.place_order(shop.card()).json()
    assert order["status"] == "CONFIRMED"
    response = shop.cancel_order(order["id"])
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["status"], cancelled["refunded"]) == ("CANCELLED", order["total"])
    assert shop.availability(sku)[sku] == before
    state = check_saga_invariants(any_platform, [order["id"]])
    assert int(state["payments"][order["id"]]["amount_refunded"]) == order["total"]


def test_same_key_ten_times_at_once_makes_one_order_and_one_charge(any_platform: Platform, shop_for: ShopFor) -> None:
    shop = _buyer(any_platform, shop_for)
    shop.fill_cart([(_sku(shop), 1)])
    method = shop.card()
    key = str(uuid.uuid4())
    body = {
        "shipping_address": {"name": "A", "line1": "1 Road", "city": "Town", "postal_code": "1", "country": "GB"},
        "payment_method_id": method,
    }

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=any_platform.gateway_url, timeout=30) as client:
            headers = {**shop.auth, "Idempotency-Key": key}
            return list(
                await asyncio.gather(*(client.post("/api/v1/orders", json=body, headers=headers) for _ in range(10)))
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses]
    assert all(r.json()["type"] == "/problems/idempotency-key-in-flight" for r in responses if r.status_code == 409)
    first = next(r.json() for r in responses if r.status_code == 201)
    assert all(r.json() == first for r in responses if r.status_code == 201), "every completed reply is identical"
    for _ in range(sum(r.status_code == 409 for r in responses)):
        again = shop.http.post("/api/v1/orders", json=body, headers={**shop.auth, "Idempotency-Key": key})
        assert (again.status_code, again.json()) == (201, first), "a retry after the 409 gets the same reply"
    assert shop.http.get("/api/v1/orders", headers=shop.auth).json()["total"] == 1
    state = check_saga_invariants(any_platform, [first["id"]])
    user_id = state["orders"][first["id"]]["user_id"]
    charged = [p for p in state["payments"].values() if p["user_id"] == user_id]
    assert [p["order_id"] for p in charged] == [first["id"]], "one charge"
    assert first["status"] == "CONFIRMED"


def _admin(platform: Platform, shop_for: ShopFor) -> Shop:
    admin = shop_for(platform)
    created = platform.run_cli(
        "users", "admin", "create", "--email", admin.email, "--name", "Root", "--password", admin.password, check=False
    )
    assert created.returncode == 0, created.stdout + created.stderr
    admin.sign_in()
    return admin


def test_admin_ships_and_delivers_and_a_shipped_order_cannot_be_cancelled(
    any_platform: Platform, shop_for: ShopFor
) -> None:
    shop = _buyer(any_platform, shop_for)
    shop.fill_cart([(_sku(shop), 1)])
    order = shop.place_order(shop.card()).json()
    ship = {"carrier": "DHL", "tracking_number": "JD014600003"}
    path = f"/api/v1/admin/orders/{order['id']}"
    refused = shop.http.post(f"{path}/ship", json=ship, headers=shop.auth)
    assert refused.status_code == 403, refused.text
    admin = _admin(any_platform, shop_for)
    shipped = admin.http.post(f"{path}/ship", json=ship, headers=admin.auth)
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["shipment"] == ship
    assert shop.cancel_order(order["id"]).status_code == 409
    delivered = admin.http.post(f"{path}/deliver", headers=admin.auth)
    assert delivered.status_code == 200, delivered.text
    seen = shop.order(order["id"])
    assert [entry["status"] for entry in seen["timeline"]] == ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED"]
    assert all(entry["at"] for entry in seen["timeline"])


def test_orders_are_private_and_paginated(any_platform: Platform, shop_for: ShopFor) -> None:
    shop = _buyer(any_platform, shop_for)
    method = shop.card()
    ids = []
    for _ in range(3):
        shop.fill_cart([(_sku(shop), 1)])
        ids.append(shop.place_order(method).json()["id"])
    page: dict[str, Any] = shop.http.get("/api/v1/orders?limit=2&page=2", headers=shop.auth).json()
    assert (page["total"], [o["id"] for o in page["items"]]) == (3, [ids[0]]), "newest first"
    stranger = _buyer(any_platform, shop_for)
    assert stranger.http.get(f"/api/v1/orders/{ids[0]}", headers=stranger.auth).status_code == 404
    assert stranger.cancel_order(ids[0]).status_code == 404
    assert stranger.http.get("/api/v1/orders", headers=stranger.auth).json()["total"] == 0

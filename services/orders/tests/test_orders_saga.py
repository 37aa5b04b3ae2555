"""Orders API and checkout saga against real HTTP stand-ins for users, products and payments."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from microshop_kit.testing import JwtIssuer, jwks_server, running_app, serve_aiohttp
from microshop_orders import OrdersSettings, create_app

ADDRESS = {"name": "Ada", "line1": "1 Road", "city": "London", "postal_code": "N1", "country": "GB"}


@dataclass
class Upstreams:
    """Small fakes of users, products and payments that answer over real HTTP and record every call."""

    prices: dict[str, int] = field(default_factory=lambda: {"MUG-1": 1200, "TEA-1": 650})
    stock: dict[str, int] = field(default_factory=lambda: {"MUG-1": 10, "TEA-1": 1})
    payments_down: bool = False
    calls: list[str] = field(default_factory=list)
    reservations: dict[str, str] = field(default_factory=dict)
    charges: dict[str, str] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/internal/v1/users/{id}", self.user)
        app.router.add_get("/internal/v1/products", self.products)
        app.router.add_post("/internal/v1/reservations", self.reserve)
        app.router.add_post("/internal/v1/reservations/{id}/{action}", self.settle)
        app.router.add_post("/internal/v1/payments", self.charge)
        app.router.add_post("/internal/v1/payments/{id}/cancel", self.cancel)
        return app

    async def user(self, request: web.Request) -> web.Response:
        self.calls.append("user")
        user_id = request.match_info["id"]
        body = {"id": user_id, "email": "ada@example.com", "name": "Ada", "active": True, "can_order": True}
        return web.json_response(body)

    async def products(self, request: web.Request) -> web.Response:
        skus = request.query.getall("sku", [])
        items = [
            {
                "id": sku,
                "sku": sku,
                "name": f"Product {sku}",
                "price": self.prices[sku],
                "currency": "EUR",
                "active": True,
            }
            for sku in skus
            if sku in self.prices
        ]
        return web.json_response({"items": items})

    async def reserve(self, request: web.Request) -> web.Response:
        self.calls.append("reserve")
        body = await request.json()
        short = [line["sku"] for line in body["lines"] if self.stock.get(line["sku"], 0) < line["quantity"]]
        if short:
            problem = {"type": "/problems/out-of-stock", "title": "Conflict", "status": 409, "skus": short}
            return web.json_response(problem, status=409, content_type="application/problem+json")
        if body["order_id"] not in self.reservations:
            for line in body["lines"]:
                self.stock[line["sku"]] -= line["quantity"]
        self.reservations[body["order_id"]] = "reserved"
        return web.json_response({"order_id": body["order_id"], "status": "reserved"}, status=201)

    async def settle(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        self.calls.append(action)
        self.reservations[request.match_info["id"]] = action
        return web.json_response({"order_id": request.match_info["id"], "status": action + "ed"})

    async def charge(self, request: web.Request) -> web.Response:
        self.calls.append("charge")
        if self.payments_down:
            return web.json_response({"status": 503}, status=503)
        body = await request.json()
        assert request.headers["Idempotency-Key"] == body["order_id"]
        if body["payment_method_id"] == "pm_declined":
            problem = {"type": "/problems/payment-declined", "status": 402, "decline_code": "card_declined"}
            return web.json_response(problem, status=402)
        self.charges[body["order_id"]] = "captured"
        return web.json_response({"id": "pay_" + body["order_id"][:8], "status": "captured"}, status=201)

    async def cancel(self, request: web.Request) -> web.Response:
        self.calls.append("cancel")
        self.charges[request.match_info["id"]] = "refunded"
        return web.json_response({"order_id": request.match_info["id"], "status": "refunded"})


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstreams, str]]:
    fake = Upstreams()
    async with serve_aiohttp(fake.app()) as url:
        yield fake, url


@dataclass
class Harness:
    client: httpx.AsyncClient
    fake: Upstreams
    issuer: JwtIssuer
    db_path: Path
    user: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def auth(self) -> dict[str, str]:
        return self.issuer.headers(self.user)

    async def cart(self, *lines: tuple[str, int]) -> httpx.Response:
        body = {"lines": [{"sku": sku, "quantity": q} for sku, q in lines]}
        return await self.client.put("/api/v1/cart", json=body, headers=self.auth)

    async def order(self, method: str = "pm_good", key: str | None = None) -> httpx.Response:
        headers = {**self.auth, "Idempotency-Key": key or str(uuid.uuid4())}
        body = {"shipping_address": ADDRESS, "payment_method_id": method}
        return await self.client.post("/api/v1/orders", json=body, headers=headers)

    def outbox_types(self) -> list[str]:
        with sqlite3.connect(self.db_path) as conn:
            return [row[0] for row in conn.execute("SELECT type FROM outbox ORDER BY seq")]


async def _harness(tmp_path: Path, upstream_url: str, fake: Upstreams, **overrides: Any) -> AsyncIterator[Harness]:
    issuer = JwtIssuer()
    async with jwks_server(issuer) as jwks_url:
        settings = OrdersSettings(
            data_dir=tmp_path,
            jwks_url=jwks_url,
            broker_url=None,
            users_url=upstream_url,
            products_url=upstream_url,
            payments_url=upstream_url,
            recovery_interval_seconds=0.05,
            **overrides,
        )
        async with running_app(create_app(settings)) as client:
            yield Harness(client, fake, issuer, tmp_path / "orders.db")


@pytest.fixture
async def shop(tmp_path: Path, upstreams: tuple[Upstreams, str]) -> AsyncIterator[Harness]:
    fake, url = upstreams
    async for harness in _harness(tmp_path, url, fake):
        yield harness


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
    async for shop in _harness(tmp_path, url, fake, checkout_budget_seconds=0.3):
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
    async for shop in _harness(tmp_path, url, fake, checkout_budget_seconds=0.2, saga_timeout_seconds=0.5):
        await shop.cart(("MUG-1", 1))
        order_id = (await shop.order()).json()["id"]
        for _ in range(100):
            order = (await shop.client.get(f"/api/v1/orders/{order_id}", headers=shop.auth)).json()
            if order["status"] != "PENDING":
                break
            await asyncio.sleep(0.1)
        assert order["status"] == "REJECTED"
        assert fake.charges[order_id] == "refunded", "a charge whose answer was lost is cancelled"
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

"""Helpers the orders tests share: fakes of users, products and payments served over real HTTP, and a harness
that runs the orders app against them."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from fastapi import FastAPI

from microshop_kit.testing import JwtIssuer, jwks_server, running_app
from microshop_orders.app import create_app
from microshop_orders.settings import OrdersSettings

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
    #: What GET /internal/v1/payments/{order_id} answers for a payment waiting for the customer.
    action_outcome: dict[str, Any] = field(default_factory=lambda: {"status": "requires_action"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/internal/v1/users/{id}", self.user)
        app.router.add_get("/internal/v1/products", self.products)
        app.router.add_post("/internal/v1/reservations", self.reserve)
        app.router.add_post("/internal/v1/reservations/{id}/{action}", self.settle)
        app.router.add_post("/internal/v1/payments", self.charge)
        app.router.add_post("/internal/v1/payments/{id}/cancel", self.cancel)
        app.router.add_get("/internal/v1/payments/{id}", self.payment)
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
        action, order_id = request.match_info["action"], request.match_info["id"]
        self.calls.append(action)
        if action == "return" and self.reservations.get(order_id) != "commit":
            problem = {"type": "/problems/reservation-not-committed", "status": 409}
            return web.json_response(problem, status=409)
        self.reservations[order_id] = action
        return web.json_response({"order_id": order_id, "status": action + "ed"})

    async def charge(self, request: web.Request) -> web.Response:
        self.calls.append("charge")
        if self.payments_down:
            return web.json_response({"status": 503}, status=503)
        body = await request.json()
        assert request.headers["Idempotency-Key"] == body["order_id"]
        method, order_id = body["payment_method_id"], body["order_id"]
        if method == "pm_declined":
            problem = {"type": "/problems/payment-declined", "status": 402, "code": "card_declined"}
            return web.json_response(problem, status=402)
        if method == "pm_flaky":
            problem = {"type": "/problems/provider-error", "status": 503, "code": "processing_error", "retryable": True}
            return web.json_response(problem, status=503)
        if method == "pm_3ds":
            self.charges[order_id] = "requires_action"
            action = {"type": "redirect_to_url", "url": f"/pay/pay_{order_id[:8]}"}
            return web.json_response(
                {"id": f"pay_{order_id[:8]}", "status": "requires_action", "next_action": action}, status=201
            )
        self.charges[order_id] = "captured"
        return web.json_response({"id": "pay_" + order_id[:8], "status": "succeeded"}, status=201)

    async def payment(self, request: web.Request) -> web.Response:
        self.calls.append("poll")
        order_id = request.match_info["id"]
        if order_id not in self.charges:
            return web.json_response({"status": 404}, status=404)
        if self.charges[order_id] == "requires_action":
            return web.json_response({"order_id": order_id, **self.action_outcome})
        return web.json_response({"order_id": order_id, "status": "succeeded"})

    async def cancel(self, request: web.Request) -> web.Response:
        self.calls.append("cancel")
        previous = self.charges.get(request.match_info["id"])
        status = "refunded" if previous == "captured" else "canceled"
        self.charges[request.match_info["id"]] = status
        return web.json_response({"order_id": request.match_info["id"], "status": status})


@dataclass
class Harness:
    client: httpx.AsyncClient
    fake: Upstreams
    issuer: JwtIssuer
    db_path: Path
    app: FastAPI
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

    @property
    def admin(self) -> dict[str, str]:
        return self.issuer.headers(str(uuid.uuid4()), roles=["customer", "admin"])

    async def wait_order(self, order_id: str, *, until: tuple[str, ...] = ("PENDING",), seconds: float = 10) -> Any:
        """The order once its status is no longer one of ``until`` (or as it is after ``seconds``)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            order = (await self.client.get(f"/api/v1/orders/{order_id}", headers=self.auth)).json()
            if order["status"] not in until or asyncio.get_running_loop().time() > deadline:
                return order
            await asyncio.sleep(0.05)

    def outbox_types(self) -> list[str]:
        with sqlite3.connect(self.db_path) as conn:
            return [row[0] for row in conn.execute("SELECT type FROM outbox ORDER BY seq")]


async def run_harness(tmp_path: Path, upstream_url: str, fake: Upstreams, **overrides: Any) -> AsyncIterator[Harness]:
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
        app = create_app(settings)
        async with running_app(app) as client:
            yield Harness(client, fake, issuer, tmp_path / "orders.db", app)

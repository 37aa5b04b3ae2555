"""Storefront test fixtures: a real aiohttp stand-in for the gateway's public API and the mail sink, and the app."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web

from microshop_kit.testing import JwtIssuer, running_app
from microshop_storefront import StorefrontSettings, create_app

PASSWORD = "correct horse battery staple"
CATEGORIES = [{"slug": "mugs", "name": "Mugs"}, {"slug": "tea", "name": "Tea & Infusions"}]
PRODUCTS = [
    {
        "id": "p-1",
        "sku": "MUG-1",
        "name": "Blue Mug",
        "price": 1299,
        "currency": "EUR",
        "category": "mugs",
        "image_url": "/api/v1/products/p-1/image.svg",
        "available": 12,
        "description": "A sturdy blue mug.",
    },
    {
        "id": "p-2",
        "sku": "MUG-2",
        "name": "Tiny Mug",
        "price": 550,
        "currency": "EUR",
        "category": "mugs",
        "image_url": "/api/v1/products/p-2/image.svg",
        "available": 2,
    },
    {
        "id": "p-3",
        "sku": "TEA-1",
        "name": "Green Tea <Sencha>",
        "price": 123456,
        "currency": "EUR",
        "category": "tea",
        "image_url": "/api/v1/products/p-3/image.svg",
        "available": 0,
    },
]
MESSAGES = [
    {
        "id": "1700000002.M2P1Q2.host",
        "from": "shop@microshop.test",
        "to": "ada@example.com",
        "recipients": ["ada@example.com"],
        "subject": "Your order is confirmed",
        "date": "Tue, 14 Nov 2023 22:13:22 +0000",
        "text": "Thanks for your order.",
        "html": "<p>Thanks for your <b>order</b> &amp; more.</p><script>alert(1)</script>",
    },
    {
        "id": "1700000001.M1P1Q1.host",
        "from": "shop@microshop.test",
        "to": "bob@example.com",
        "recipients": ["bob@example.com"],
        "subject": "Welcome to microshop",
        "date": "Tue, 14 Nov 2023 22:13:21 +0000",
        "text": "Welcome, Bob!",
        "html": None,
    },
]


@dataclass
class FakeApis:
    """A stand-in of the gateway's public API and of the mail sink over real HTTP, keeping what it was sent.

    Accounts: any email signs up (``taken@example.com`` is taken, a password under 12 characters is weak);
    the password is always ``PASSWORD``; an email starting ``admin@`` gets the admin role. Tokens are real EdDSA
    JWTs; ``expire_all()`` makes the API refuse every access token issued so far, as it would once they ran out.
    Orders answer ``order_outcome``; the admin's list pages through ``admin_orders`` (newest first) and answers
    503 while ``orders_down``; the lookup of an order answers ``order_refusal`` when set.
    """

    issuer: JwtIssuer = field(default_factory=JwtIssuer)
    queries: list[dict[str, str]] = field(default_factory=list)
    mailbox_queries: list[dict[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    carts: dict[str, dict[str, int]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    refused_tokens: set[str] = field(default_factory=set)
    #: Access tokens issued by a refresh after ``expire_all()``: these the API still takes.
    fresh: set[str] = field(default_factory=set)
    order_outcome: tuple[int, dict[str, Any]] | None = None
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_related: bool = False
    admin_orders: list[dict[str, Any]] = field(default_factory=list)
    admin_order_queries: list[dict[str, str]] = field(default_factory=list)
    orders_down: bool = False
    #: A problem (status, detail) the order lookup by id answers instead of the order.
    order_refusal: tuple[int, str] | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------------------ helpers

    def record(self, request: web.Request, body: Any = None) -> None:
        self.calls.append((request.method, request.path, body))

    def called(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.calls if m == method and p == path]

    def issue(self, user_id: str, email: str) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = f"{user_id}|{email}"
        roles = ("customer", "admin") if email.startswith("admin@") else ("customer",)
        access = self.issuer.token(user_id, email=email, roles=roles)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 900}

    def expire_all(self) -> None:
        self.refused_tokens.add("*")

    def claims_of(self, request: web.Request) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or ("*" in self.refused_tokens and token not in self.fresh):
            return None
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        return claims

    def user_of(self, request: web.Request) -> str | None:
        claims = self.claims_of(request)
        return None if claims is None else str(claims["sub"])

    @staticmethod
    def problem(status: int, type_: str, detail: str, **extra: Any) -> web.Response:
        body = {"type": type_, "title": "Error", "status": status, "detail": detail, **extra}
        return web.json_response(body, status=status, content_type="application/problem+json")

    def unauthorized(self) -> web.Response:
        return self.problem(401, "/problems/unauthorized", "A valid access token is required.")

    # ----------------------------------------------------------------------------------------- catalog

    async def products(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        if self.fail_related and "category" in query and "q" not in query:
            return web.json_response({"title": "boom"}, status=500)
        page, limit = int(query.get("page", 1)), int(query.get("limit", 20))
        items = [p for p in PRODUCTS if "category" not in query or p["category"] == query["category"]]
        if "q" in query:
            items = [p for p in items if query["q"].lower() in str(p["name"]).lower()]
        if query.get("category") == "nope":
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        if len(query.get("q", "").split()) > 10:
            return self.problem(422, "/problems/validation", "q: at most 10 words")
        shown = items[(page - 1) * limit : page * limit]
        return web.json_response({"items": shown, "page": page, "limit": limit, "total": len(items)})

    async def product(self, request: web.Request) -> web.Response:
        found = next((p for p in PRODUCTS if p["id"] == request.match_info["id"]), None)
        if found is None:
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        return web.json_response(found)

    async def categories(self, _: web.Request) -> web.Response:
        return web.json_response({"items": CATEGORIES})

    # ---------------------------------------------------------------------------------------- accounts

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.record(request, body)
        if body["email"] == "taken@example.com":
            return self.problem(409, "/problems/email-taken", "An account with this email exists.")
        if len(body["password"]) < 12:
            errors = [{"loc": ["body", "password"], "msg": "must have at least 12 characters", "type": "value_error"}]
            return self.problem(422, "/problems/validation", "password: too short", errors=errors)
        return web.json_response({"id": "u-1", "email": body["email"], "name": body["name"]}, status=201)

    async def token(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.record(request, {"email": body["email"]})
        if body["password"] != PASSWORD:
            return self.problem(401, "/problems/invalid-credentials", "The email or the password is wrong.")
        return web.json_response(self.issue(f"user-{body['email']}", body["email"]))

    async def refresh(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.record(request, body)
        owner = self.refresh_tokens.pop(body["refresh_token"], None)
        if owner is None:
            return self.problem(401, "/problems/invalid-refresh-token", "The refresh token is invalid.")
        user_id, email = owner.split("|")
        tokens = self.issue(user_id, email)
        self.fresh.add(tokens["access_token"])
        return web.json_response(tokens)

    async def logout(self, request: web.Request) -> web.Response:
        self.record(request, await request.json())
        return web.Response(status=204)

    async def addresses(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return self.unauthorized()
        return web.json_response({"items": []})

    # ------------------------------------------------------------------------------------ cart, orders

    def cart_body(self, user: str) -> dict[str, Any]:
        lines = []
        for sku, qty in self.carts.get(user, {}).items():
            product = next(p for p in PRODUCTS if p["sku"] == sku)
            price = int(product["price"])
            line = {"sku": sku, "name": product["name"], "quantity": qty, "unit_price": price, "currency": "EUR"}
            line.update(line_total=price * qty, available=True, price_changed=False, previous_price=None)
            lines.append(line)
        return {"lines": lines, "total": sum(line["line_total"] for line in lines), "currency": "EUR"}

    async def cart(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        if user is None:
            return self.unauthorized()
        if request.method == "PUT":
            body = await request.json()
            self.record(request, body)
            known = {p["sku"] for p in PRODUCTS}
            unknown = [line["sku"] for line in body["lines"] if line["sku"] not in known]
            if unknown:
                return self.problem(422, "/problems/unknown-products", "Unknown products", skus=unknown)
            self.carts[user] = {line["sku"]: line["quantity"] for line in body["lines"]}
        return web.json_response(self.cart_body(user))

    async def payment_method(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return self.unauthorized()
        body = await request.json()
        self.record(request, {"type": body["type"], "key": request.headers.get("Idempotency-Key")})
        number = body.get("card", {}).get("number", "")
        if number == "4242424242424241":
            errors = [{"loc": ["body", "card", "number"], "msg": "fails the Luhn check", "type": "value_error"}]
            return self.problem(422, "/problems/validation", "card.number: fails the Luhn check", errors=errors)
        return web.json_response({"id": "pm_test1", "type": body["type"]}, status=201)

    async def place_order(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        if user is None:
            return self.unauthorized()
        body = await request.json()
        self.record(request, {**body, "key": request.headers.get("Idempotency-Key")})
        status, answer = self.order_outcome or (201, order_body("CONFIRMED"))
        if status < 300:
            self.orders[answer["id"]] = answer
        return web.json_response(answer, status=status)

    async def order_list(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return self.unauthorized()
        items = list(self.orders.values())
        return web.json_response({"items": items, "page": 1, "limit": 10, "total": len(items)})

    async def order(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return self.unauthorized()
        if self.order_refusal is not None:
            return self.problem(self.order_refusal[0], "/problems/forbidden", self.order_refusal[1])
        found = self.orders.get(request.match_info["id"])
        if found is None:
            return self.problem(404, "/problems/not-found", "Order does not exist")
        return web.json_response(found)

    async def admin_order_list(self, request: web.Request) -> web.Response:
        self.admin_order_queries.append(dict(request.query))
        claims = self.claims_of(request)
        if claims is None:
            return self.unauthorized()
        if "admin" not in claims.get("roles", []):
            return self.problem(403, "/problems/forbidden", "This needs the admin role.")
        if self.orders_down:
            return self.problem(503, "/problems/upstream-unavailable", "orders is unavailable", service="orders")
        page, limit = int(request.query.get("page", 1)), int(request.query.get("limit", 20))
        wanted = request.query.get("status")
        items = [o for o in self.admin_orders if wanted is None or o["status"] == wanted]
        shown = items[(page - 1) * limit : page * limit]
        return web.json_response({"items": shown, "page": page, "limit": limit, "total": len(items)})

    async def payment_action(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return self.unauthorized()
        body = await request.json()
        self.record(request, body)
        order = next(iter(self.orders.values()))
        order.update(status="CONFIRMED" if body["decision"] == "approve" else "REJECTED", next_action=None)
        status = "succeeded" if body["decision"] == "approve" else "canceled"
        payment = {"id": request.match_info["id"], "order_id": order["id"], "status": status, "amount": 1299}
        return web.json_response(payment)

    # ---------------------------------------------------------------------------------------- mailbox

    async def messages(self, request: web.Request) -> web.Response:
        self.mailbox_queries.append(dict(request.query))
        wanted = request.query.get("to")
        return web.json_response([m for m in MESSAGES if not wanted or wanted in m["recipients"]])

    async def message(self, request: web.Request) -> web.Response:
        found = next((m for m in MESSAGES if m["id"] == request.match_info["id"]), None)
        if found is None:
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response(found)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/products", self.products)
        app.router.add_get("/api/v1/products/{id}", self.product)
        app.router.add_get("/api/v1/categories", self.categories)
        app.router.add_post("/api/v1/users", self.register)
        app.router.add_post("/api/v1/auth/token", self.token)
        app.router.add_post("/api/v1/auth/refresh", self.refresh)
        app.router.add_post("/api/v1/auth/logout", self.logout)
        app.router.add_get("/api/v1/users/me/addresses", self.addresses)
        app.router.add_get("/api/v1/cart", self.cart)
        app.router.add_put("/api/v1/cart", self.cart)
        app.router.add_post("/api/v1/payment-methods", self.payment_method)
        app.router.add_post("/api/v1/orders", self.place_order)
        app.router.add_get("/api/v1/orders", self.order_list)
        app.router.add_get("/api/v1/orders/{id}", self.order)
        app.router.add_get("/api/v1/admin/orders", self.admin_order_list)
        app.router.add_post("/api/v1/payments/{id}/action", self.payment_action)
        app.router.add_get("/messages", self.messages)
        app.router.add_get("/messages/{id}", self.message)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def order_body(status: str, **extra: Any) -> dict[str, Any]:
    """An order as the orders API answers it."""
    body: dict[str, Any] = {
        "id": "0b7f7c1e-4a8e-4d36-9d1a-3f1f2c9b5a10",
        "status": status,
        "reason": None,
        "next_action": None,
        "cancellation_pending": False,
        "refunded": 0,
        "shipment": None,
        "lines": [
            {
                "sku": "MUG-1",
                "name": "Blue Mug",
                "quantity": 1,
                "unit_price": 1299,
                "currency": "EUR",
                "line_total": 1299,
            }
        ],
        "total": 1299,
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "1 Way", "city": "London", "postal_code": "N1", "country": "GB"},
        "created_at": "2026-11-25T10:00:00+00:00",
        "timeline": [{"at": "2026-11-25T10:00:00+00:00", "status": status, "note": None}],
    }
    body.update(extra)
    return body


def order_summary(order_id: str, status: str, *, user_id: str = "user-ada", minute: int = 0) -> dict[str, Any]:
    """An order as the admin's list (``GET /api/v1/admin/orders``) answers it."""
    at = f"2026-11-25T10:{minute:02d}:00+00:00"
    return {
        "id": order_id,
        "user_id": user_id,
        "status": status,
        "cancellation_pending": False,
        "total": 1299,
        "currency": "EUR",
        "line_count": 1,
        "created_at": at,
        "updated_at": at,
    }


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def apis() -> AsyncIterator[FakeApis]:
    fake = FakeApis()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


StorefrontFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_storefront(tmp_path: Path, apis: FakeApis) -> StorefrontFactory:
    """Run the storefront over the fakes; keyword arguments override settings (``products_url=...``)."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {"gateway_url": apis.url, "mailbox_url": apis.url, "page_size": 2, **overrides}
        settings = StorefrontSettings(data_dir=tmp_path, broker_url=None, log_json=False, **values)
        async with running_app(create_app(settings)) as client:
            yield client

    return make


@pytest.fixture
async def storefront(make_storefront: StorefrontFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_storefront() as client:
        yield client


@pytest.fixture
def dead_url() -> str:
    return closed_port_url()


def csrf_of(page: str) -> str:
    """The CSRF token a rendered page carries in its forms."""
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


async def signed_in(storefront: httpx.AsyncClient, email: str = "ada@example.com") -> None:
    """Sign in through the storefront's form (the client keeps the cookies)."""
    page = await storefront.get("/signin")
    response = await storefront.post(
        "/signin", data={"csrf_token": csrf_of(page.text), "email": email, "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 303, response.text

"""Storefront test fixtures: real aiohttp stand-ins for the products API and the mail sink, and the app."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from microshop_kit.testing import running_app
from microshop_storefront import StorefrontSettings, create_app

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
    """Products API and mail sink stand-ins over real HTTP; ``queries`` records each products list query."""

    queries: list[dict[str, str]] = field(default_factory=list)
    mailbox_queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def products(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        page, limit = int(query.get("page", 1)), int(query.get("limit", 20))
        items = [p for p in PRODUCTS if "category" not in query or p["category"] == query["category"]]
        if query.get("category") == "nope":
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        shown = items[(page - 1) * limit : page * limit]
        return web.json_response({"items": shown, "page": page, "limit": limit, "total": len(items)})

    async def product(self, request: web.Request) -> web.Response:
        found = next((p for p in PRODUCTS if p["id"] == request.match_info["id"]), None)
        if found is None:
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        return web.json_response(found)

    async def categories(self, _: web.Request) -> web.Response:
        return web.json_response({"items": CATEGORIES})

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
        app.router.add_get("/messages", self.messages)
        app.router.add_get("/messages/{id}", self.message)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


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
        values: dict[str, Any] = {"products_url": apis.url, "mailbox_url": apis.url, "page_size": 2, **overrides}
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

"""Gateway test fixtures: real aiohttp echo servers as upstreams, a JWKS issuer, and the gateway app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from microshop_gateway import GatewaySettings, create_app
from microshop_kit.testing import JwtIssuer, jwks_server, running_app

SERVICES = ("users", "products", "orders", "payments", "notifications", "storefront")


@dataclass
class EchoUpstream:
    """A stand-in service: answers every request with what it received, and records it.

    a path ending in ``/slow`` waits until the test ends (or ``release`` is set); one ending in ``/cacheable`` is
    answered as shareable (``Cache-Control: public``); ``/readyz`` answers ``ready_status``. With ``drop`` set,
    every other request is recorded and its connection closed without an answer (a crashing instance that
    still passes its readiness probe). A path ending in ``/fail`` is answered 503 (the service speaking);
    ``/openapi.json`` answers ``openapi`` when it is set (``openapi_status`` otherwise).
    """

    name: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    ready_status: int = 200
    drop: bool = False
    openapi: dict[str, Any] | None = None
    openapi_status: int = 404
    openapi_served: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/readyz":
            return web.json_response({"status": "x"}, status=self.ready_status)
        if request.path == "/openapi.json":
            self.openapi_served += 1
            if self.openapi is None:
                return web.json_response({"detail": "none"}, status=self.openapi_status)
            return web.json_response(self.openapi)
        body = await request.read()
        call = {
            "instance": self.name,
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": request.raw_path.partition("?")[2],
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "raw_headers": [(k.decode().lower(), v.decode()) for k, v in request.raw_headers],
            "body": body.decode("utf-8", "replace"),
        }
        self.calls.append(call)
        if self.drop and request.transport is not None:
            request.transport.abort()
            return web.Response()
        if request.path.endswith("/fail"):
            return web.json_response({"type": "/problems/x"}, status=503, content_type="application/problem+json")
        if request.path.endswith("/slow"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), timeout=5)
        headers = {
            "X-Upstream": self.name,
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Keep-Alive": "timeout=5",
            "X-Request-ID": "upstream-own-id",
            "Set-Cookie": "a=1",
        }
        if request.path.endswith("/cacheable"):
            # A public catalog-like answer: no cookies, shareable for 30 s.
            return web.json_response(call, headers={"X-Upstream": self.name, "Cache-Control": "public, max-age=30"})
        response = web.json_response(call, headers=headers)
        response.headers.add("Set-Cookie", "b=2")
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, EchoUpstream]]:
    """One echo server per service, plus a second products instance (``products-2``)."""
    servers = {name: EchoUpstream(name) for name in (*SERVICES, "products-2")}
    for server in servers.values():
        await server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


@pytest.fixture
def issuer() -> JwtIssuer:
    return JwtIssuer()


@pytest.fixture
async def jwks_url(issuer: JwtIssuer) -> AsyncIterator[str]:
    async with jwks_server(issuer) as url:
        yield url


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_gateway(tmp_path: Path, upstreams: dict[str, EchoUpstream], jwks_url: str) -> GatewayFactory:
    """Run a gateway over the echo upstreams; keyword arguments override settings (``orders_url=...``)."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        urls = {f"{name}_url": upstreams[name].url for name in SERVICES}
        settings = GatewaySettings(
            data_dir=tmp_path, jwks_url=jwks_url, broker_url=None, log_json=False, **{**urls, **overrides}
        )
        async with running_app(create_app(settings)) as client:
            yield client

    return make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_gateway() as client:
        yield client


@pytest.fixture
def dead_url() -> str:
    return closed_port_url()

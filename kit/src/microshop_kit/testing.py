"""Test helpers every service's tests share: a real JWKS issuer on loopback and an app run with its lifespan.

Imported by tests only (it needs httpx, a dev dependency).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.routing import APIRoute
from jwt.algorithms import OKPAlgorithm
from starlette.types import Receive, Scope, Send

from microshop_kit.lean import LeanRoute


class JwtIssuer:
    """Signs access tokens the way the users service does, with a key of its own."""

    def __init__(self, issuer: str = "microshop-users", audience: str = "microshop") -> None:
        self.issuer = issuer
        self.audience = audience
        self.key = Ed25519PrivateKey.generate()
        self.kid = secrets.token_hex(8)

    def jwks(self) -> dict[str, Any]:
        public: dict[str, Any] = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        public.update(kid=self.kid, use="sig", alg="EdDSA")
        return {"keys": [public]}

    def token(
        self,
        sub: str | None = None,
        *,
        roles: Iterable[str] = ("customer",),
        email: str | None = None,
        ttl: int = 900,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub or str(uuid.uuid4()),
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
            "roles": list(roles),
            "email": email,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, sub: str | None = None, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **kwargs)}"}


@contextlib.asynccontextmanager
async def serve_aiohttp(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve a small aiohttp app over real HTTP on 127.0.0.1 (a free port); yields its base URL."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def jwks_server(issuer: JwtIssuer) -> AsyncIterator[str]:
    """Serve the issuer's JWKS over real HTTP on 127.0.0.1; yields the JWKS URL."""

    async def handle(_: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handle)
    async with serve_aiohttp(app) as base:
        yield f"{base}/.well-known/jwks.json"


@contextlib.asynccontextmanager
async def running_app(app: FastAPI, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (database, migrations, bus) and give an HTTP client bound to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@contextlib.contextmanager
def served_by_fastapi() -> Iterator[None]:
    """Inside, lean routes (microshop_kit.lean) hand every request to FastAPI's own handling."""
    previous, LeanRoute.lean = LeanRoute.lean, False
    try:
        yield
    finally:
        LeanRoute.lean = previous


async def compare_with_fastapi(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    lean: bool = True,
    ignored_headers: tuple[str, ...] = (),
    **kwargs: Any,
) -> httpx.Response:
    """Send a request to a lean route twice, first to FastAPI's own handling of it, then as it is served; assert the
    same status, headers (but the request id) and body byte for byte, and that the lean path answered it itself
    (``lean=False``: that it handed it to FastAPI, as it does a request that does not validate). A write sent
    twice must be one the route answers again unchanged (an idempotent replay; ``ignored_headers``: the headers that
    tell a replay from a first answer). Returns the second answer."""
    with served_by_fastapi():
        by_fastapi = await client.request(method, url, **kwargs)
    handed: list[str] = []
    fastapi_handle = APIRoute.handle

    async def recorded(route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        handed.append(route.path)
        await fastapi_handle(route, scope, receive, send)

    APIRoute.handle = recorded  # type: ignore[method-assign, assignment]
    try:
        answer = await client.request(method, url, **kwargs)
    finally:
        APIRoute.handle = fastapi_handle  # type: ignore[method-assign]
    request = f"{method} {url}"
    assert (answer.status_code, answer.content) == (by_fastapi.status_code, by_fastapi.content), (
        f"{request}: {answer.status_code} {answer.text[:500]} != {by_fastapi.status_code} {by_fastapi.text[:500]}"
    )

    def headers(response: httpx.Response) -> list[tuple[str, str]]:
        return [(k, v) for k, v in response.headers.multi_items() if k not in ("x-request-id", *ignored_headers)]

    assert headers(answer) == headers(by_fastapi), f"{request}: {headers(answer)} != {headers(by_fastapi)}"
    assert bool(handed) is not lean, f"{request}: {'handed to FastAPI' if handed else 'served by the lean path'}"
    return answer


#: One request for ``compare_each_with_fastapi``: method, URL, whether the lean path answers it itself, and the
#: keywords of ``httpx.AsyncClient.request`` (json, content, headers, ...).
LeanCheck = tuple[str, str, bool, dict[str, Any]]


async def compare_each_with_fastapi(
    client: httpx.AsyncClient, checks: Iterable[LeanCheck], *, ignored_headers: tuple[str, ...] = ()
) -> list[int]:
    """``compare_with_fastapi`` for each check in turn; the statuses of the answers, in order."""
    statuses = []
    for method, url, lean, kwargs in checks:
        answer = await compare_with_fastapi(client, method, url, lean=lean, ignored_headers=ignored_headers, **kwargs)
        statuses.append(answer.status_code)
    return statuses


def require_server(host: str, port: int, what: str) -> None:
    """Skip a test whose real server is not reachable; under CI (CI=true) fail instead, since CI runs them all."""
    import socket

    import pytest

    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{what} is not reachable at {host}:{port} ({exc}); start it (see README) to run this test"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} -- CI must run it", pytrace=False)
        pytest.skip(message)


#: The PostgreSQL server the tests create their throw-away databases on.
POSTGRES_SERVER = os.environ.get("MICROSHOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextlib.asynccontextmanager
async def postgres_database(prefix: str, server: str = POSTGRES_SERVER) -> AsyncIterator[str]:
    """A uniquely named, empty PostgreSQL database for one test (its URL), dropped afterwards.

    Skips the test when the server is not reachable (fails it under CI, see `require_server`).
    """
    import asyncpg

    parts = urlsplit(server)
    require_server(parts.hostname or "127.0.0.1", parts.port or 5432, "PostgreSQL")
    name = f"{prefix}_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(f"{server.rstrip('/')}/postgres", timeout=10, command_timeout=60)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server.rstrip('/')}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()

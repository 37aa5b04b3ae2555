"""Test helpers every service's tests share: a real JWKS issuer on loopback and an app run with its lifespan.

Imported by tests only (it needs httpx, a dev dependency).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm


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

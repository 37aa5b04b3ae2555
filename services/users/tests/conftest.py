"""Users test fixtures: the users app, whose own JWKS reaches its token verifier over real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI

from microshop_kit.testing import running_app, serve_aiohttp
from microshop_users import UsersSettings, create_app

PASSWORD = "correct-horse-battery"


class JwksRelay:
    """A real HTTP server on 127.0.0.1 that answers with the JWKS the users app publishes.

    ``running_app`` serves the app in-process (no port), yet its verifier fetches keys over HTTP like in
    production; this relay is that HTTP hop, and serves whatever the app's own route answers.
    """

    def __init__(self) -> None:
        self.app_client: httpx.AsyncClient | None = None
        self.url = ""

    async def handle(self, _: web.Request) -> web.Response:
        if self.app_client is None:
            return web.json_response({"error": "the users app is not running yet"}, status=503)
        answer = await self.app_client.get("/.well-known/jwks.json")
        return web.Response(body=answer.content, status=answer.status_code, content_type="application/json")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[JwksRelay]:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self.handle)
        async with serve_aiohttp(app) as base:
            self.url = f"{base}/.well-known/jwks.json"
            yield self


class SecretScanner:
    """Looks at every response the users app gives in these tests, and fails the request that carries an
    argon2 hash, or a refresh token (or its stored SHA-256) other than the one that response just issued."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.seen: list[tuple[str, str, int]] = []  # method, path, status of every response scanned

    async def __call__(self, response: httpx.Response) -> None:
        body = (await response.aread()).decode("utf-8", "replace")
        request = response.request
        assert "$argon2" not in body, f"{request.method} {request.url.path} answered a password hash"
        for token in self.issued:
            leaked = token in body or hashlib.sha256(token.encode()).hexdigest() in body
            assert not leaked, f"{request.method} {request.url.path} answered an earlier refresh token"
        if response.headers.get("content-type", "").startswith("application/json") and '"refresh_token"' in body:
            issued = response.json().get("refresh_token")
            if isinstance(issued, str):
                self.issued.append(issued)
        self.seen.append((request.method, request.url.path, response.status_code))


@dataclass
class UsersApp:
    client: httpx.AsyncClient
    app: FastAPI
    settings: UsersSettings
    scanner: SecretScanner = field(default_factory=SecretScanner)

    async def register(
        self, email: str = "ada@example.com", password: str = PASSWORD, name: str = "Ada Lovelace"
    ) -> dict[str, Any]:
        response = await self.client.post("/api/v1/users", json={"email": email, "password": password, "name": name})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def sign_in(self, email: str = "ada@example.com", password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post("/api/v1/auth/token", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def bearer(self, email: str = "ada@example.com", password: str = PASSWORD) -> dict[str, str]:
        """The Authorization header of a fresh sign-in."""
        return {"Authorization": f"Bearer {(await self.sign_in(email, password))['access_token']}"}

    async def admin(self, email: str = "root@example.com", password: str = PASSWORD) -> dict[str, str]:
        """Create an admin (as the CLI does: the API never grants the role) and sign it in."""
        from microshop_users.domain import Role

        await self.app.state.accounts.register(email=email, password=password, name="Root", roles=(Role.ADMIN,))
        return await self.bearer(email, password)


@contextlib.asynccontextmanager
async def users_app(data_dir: Path, **overrides: Any) -> AsyncIterator[UsersApp]:
    """The users app on a SQLite file in ``data_dir``, bus disabled, verifying tokens via its own JWKS."""
    async with JwksRelay().serving() as relay:
        settings = UsersSettings(data_dir=data_dir, jwks_url=relay.url, broker_url=None, **overrides)
        app = create_app(settings)
        async with running_app(app) as client:
            relay.app_client = client
            running = UsersApp(client, app, settings)
            client.event_hooks = {"request": [], "response": [running.scanner]}
            yield running


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[UsersApp]:
    async with users_app(tmp_path) as running:
        yield running


@pytest.fixture
def start_users() -> Callable[..., contextlib.AbstractAsyncContextManager[UsersApp]]:
    """``async with start_users(data_dir, **settings) as users``: for tests that restart or configure the app."""
    return users_app

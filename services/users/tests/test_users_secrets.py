"""No response carries a password hash or a refresh token other than the one it just issued.

Every response of every users test passes the ``SecretScanner`` (conftest); this test drives one account
through every route of the API, so the scan provably covers each of them, successes and errors alike.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import UsersApp

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "another-long-passphrase"
ADDRESS = {"name": "Ada", "line1": "1 Way", "city": "London", "postal_code": "N1", "country": "GB"}


async def _every_flow(users: UsersApp) -> None:
    c = users.client
    created = await users.register()
    first = await users.sign_in()
    auth = {"Authorization": f"Bearer {first['access_token']}"}
    await c.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": "wrong-password"})
    second = (await c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    await c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})  # reuse: 401
    await c.post("/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]})
    await c.get("/.well-known/jwks.json")
    await c.get("/api/v1/users/me", headers=auth)
    await c.patch("/api/v1/users/me", json={"phone": "+447700900123", "password_hash": "x"}, headers=auth)
    await c.patch("/api/v1/users/me", json={"phone": "+447700900123"}, headers=auth)
    address = (await c.post("/api/v1/users/me/addresses", json=ADDRESS, headers=auth)).json()
    await c.get("/api/v1/users/me/addresses", headers=auth)
    await c.get(f"/api/v1/users/me/addresses/{address['id']}", headers=auth)
    await c.patch(f"/api/v1/users/me/addresses/{address['id']}", json={"city": "Bath"}, headers=auth)
    await c.delete(f"/api/v1/users/me/addresses/{address['id']}", headers=auth)
    await c.get(f"/internal/v1/users/{created['id']}")
    root = await users.admin()
    await c.get("/api/v1/admin/users", headers=root)
    await c.get(f"/api/v1/admin/users/{created['id']}", headers=root)
    await c.post(f"/api/v1/admin/users/{created['id']}/unlock", headers=root)
    third = await users.sign_in()
    await c.post(
        "/api/v1/users/me/password",
        json={"current_password": "wrong-password", "new_password": NEW_PASSWORD},
        headers=auth,
    )
    await c.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "refresh_token": third["refresh_token"]},
        headers=auth,
    )
    await c.request("DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=auth)  # the old one: 403
    await c.request("DELETE", "/api/v1/users/me", json={"password": NEW_PASSWORD}, headers=auth)
    await c.get(f"/api/v1/admin/users/{created['id']}", headers=root)


def _route_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$")


async def test_every_route_answers_without_hashes_or_earlier_refresh_tokens(users: UsersApp) -> None:
    await _every_flow(users)  # the scanner fails the first response that leaks

    openapi = (await users.client.get("/openapi.json")).json()["paths"]
    routes = {(method.upper(), path) for path, methods in openapi.items() for method in methods}
    scanned = {
        (method, template)
        for method, path, _ in users.scanner.seen
        for template in openapi
        if _route_pattern(template).match(path)
    }
    assert routes <= scanned, sorted(routes - scanned)
    statuses = {status for _, _, status in users.scanner.seen}
    assert {200, 201, 204, 401, 403, 422} <= statuses  # errors were scanned too
    assert len(users.scanner.issued) >= 4


async def test_the_scanner_catches_a_leak(users: UsersApp) -> None:
    """The scanner itself: a response that echoes an earlier refresh token fails its request."""
    await users.register()
    tokens = await users.sign_in()

    @users.app.get("/echo")
    async def echo() -> dict[str, str]:
        return {"token": tokens["refresh_token"]}

    with pytest.raises(AssertionError, match="earlier refresh token"):
        await users.client.get("/echo")

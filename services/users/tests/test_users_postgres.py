"""The users service on PostgreSQL: the same SQL (upsert, RETURNING, FOR UPDATE, partial unique index) on the
second dialect, with real concurrency (a pool of connections, not one serialised writer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from microshop_kit.testing import postgres_database

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from conftest import UsersApp

    StartUsers = Callable[..., AbstractAsyncContextManager[UsersApp]]

pytestmark = pytest.mark.infra
ADDRESSES = "/api/v1/users/me/addresses"


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with postgres_database("users") as url:
        yield url


async def test_round_trip_and_refresh_reuse_on_postgresql(
    tmp_path: Path, database_url: str, start_users: StartUsers
) -> None:
    async with start_users(tmp_path, database_url=database_url) as users:
        created = await users.register(email="Ada@Example.com")
        duplicate = await users.client.post(
            "/api/v1/users", json={"email": "ada@example.COM", "password": "another-long-password", "name": "A"}
        )
        first = await users.sign_in()
        me = await users.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {first['access_token']}"})
        rotated = await users.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        reused = await users.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        successor = await users.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
        )
        outbox = await users.app.state.kit.database.fetch("SELECT type FROM outbox")

    assert duplicate.status_code == 409
    assert me.json() == created
    assert (rotated.status_code, reused.status_code, successor.status_code) == (200, 401, 401)
    assert [row["type"] for row in outbox] == ["user.registered.v1"]


HOME = {"name": "Ada", "line1": "1 Way", "city": "London", "postal_code": "N1", "country": "GB"}


async def test_profile_addresses_lockout_admin_and_deletion_on_postgresql(
    tmp_path: Path, database_url: str, start_users: StartUsers
) -> None:
    async with start_users(tmp_path, database_url=database_url) as users:
        created = await users.register()
        auth = await users.bearer()
        profile = await users.client.patch(
            "/api/v1/users/me",
            json={"phone": "+447700900123", "notification_preferences": {"sms_order_updates": True}},
            headers=auth,
        )
        # Concurrent adds on a pool of connections: the owner's row lock keeps the cap and the one default.
        adds = await asyncio.gather(
            *(users.client.post(ADDRESSES, json={**HOME, "is_default": True}, headers=auth) for _ in range(23))
        )
        listed = (await users.client.get(ADDRESSES, headers=auth)).json()["items"]
        # Concurrent guesses on a fresh account: its attempts row is locked, so exactly ten get checked.
        await users.register(email="bob@example.com", name="Bob")
        guesses = await asyncio.gather(
            *(
                users.client.post("/api/v1/auth/token", json={"email": "bob@example.com", "password": f"guess-{n}"})
                for n in range(16)
            )
        )
        root = await users.admin()
        found = (await users.client.get("/api/v1/admin/users", params={"email": "BOB@"}, headers=root)).json()
        unlocked = await users.client.post(f"/api/v1/admin/users/{found['items'][0]['id']}/unlock", headers=root)
        bob_signs_in = await users.client.post(
            "/api/v1/auth/token", json={"email": "bob@example.com", "password": "correct-horse-battery"}
        )
        changed = await users.client.post(
            "/api/v1/users/me/password",
            json={"current_password": "correct-horse-battery", "new_password": "another-long-passphrase"},
            headers=auth,
        )
        deleted = await users.client.request(
            "DELETE", "/api/v1/users/me", json={"password": "another-long-passphrase"}, headers=auth
        )
        lookup = await users.client.get(f"/internal/v1/users/{created['id']}")
        outbox = await users.app.state.kit.database.fetch("SELECT type FROM outbox ORDER BY seq")
        addresses_left = await users.app.state.kit.database.fetchval("SELECT count(*) FROM addresses")

    assert profile.json()["notification_preferences"]["sms_order_updates"] is True
    assert sorted(r.status_code for r in adds) == [201] * 20 + [409] * 3
    assert sum(a["is_default"] for a in listed) == 1
    assert sorted(r.status_code for r in guesses) == [401] * 10 + [429] * 6
    assert (found["total"], found["items"][0]["failed_sign_ins"]) == (1, 10)
    assert found["items"][0]["locked_until"] is not None
    assert (unlocked.status_code, bob_signs_in.status_code) == (200, 200)
    assert (changed.status_code, deleted.status_code, lookup.status_code) == (204, 204, 404)
    assert addresses_left == 0
    assert [row["type"] for row in outbox][-1] == "user.deleted.v1"

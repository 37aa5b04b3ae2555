"""The users service on PostgreSQL: the same SQL (upsert, RETURNING, FOR UPDATE) on the second dialect."""

from __future__ import annotations

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

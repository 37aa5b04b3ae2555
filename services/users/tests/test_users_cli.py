"""Users command line: admins are created only here; the demo customer is created idempotently."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
from typer.testing import CliRunner, Result

from microshop_users.__main__ import cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from conftest import UsersApp

    StartUsers = Callable[..., AbstractAsyncContextManager[UsersApp]]

ADMIN = ["--email", "Root@Example.com", "--password", "admin-password-2026", "--name", "Root"]


async def _invoke(data_dir: Path, *args: str) -> Result:
    """Run the CLI as a user would (env settings), in a thread: it runs its own event loop."""
    env = {"USERS_DATA_DIR": str(data_dir), "USERS_BROKER_URL": "", "USERS_DATABASE_URL": ""}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_admin_create_makes_an_account_with_the_admin_role(tmp_path: Path, start_users: StartUsers) -> None:
    result = await _invoke(tmp_path, "admin", "create", *ADMIN)

    assert result.exit_code == 0, result.output
    assert "root@example.com" in result.output
    async with start_users(tmp_path) as users:
        tokens = await users.sign_in("root@example.com", "admin-password-2026")
        me = await users.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        outbox = await users.app.state.kit.database.fetch("SELECT type FROM outbox")
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["roles"] == ["admin"]
    assert me.json()["roles"] == ["admin"]
    assert [row["type"] for row in outbox] == ["user.registered.v1"]


async def test_admin_create_refuses_a_taken_email_and_a_weak_password(tmp_path: Path) -> None:
    assert (await _invoke(tmp_path, "admin", "create", *ADMIN)).exit_code == 0

    again = await _invoke(tmp_path, "admin", "create", *ADMIN)
    weak = await _invoke(tmp_path, "admin", "create", "--email", "b@example.com", "--password", "short", "--name", "B")

    assert again.exit_code == 1
    assert "exists" in again.output
    assert weak.exit_code == 2
    assert "--password" in weak.output


async def test_create_customer_is_idempotent(tmp_path: Path, start_users: StartUsers) -> None:
    args = ["create-customer", "--email", "demo@microshop.local", "--password", "microshop-demo-2026", "--name", "Demo"]

    first = await _invoke(tmp_path, *args)
    second = await _invoke(tmp_path, *args)

    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    assert "exists" in second.output
    async with start_users(tmp_path) as users:
        tokens = await users.sign_in("demo@microshop.local", "microshop-demo-2026")
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["roles"] == ["customer"]


async def test_admin_password_can_come_from_the_environment(tmp_path: Path, start_users: StartUsers) -> None:
    # How `microshop admin create` hands the password over: never on a command line others can list.
    env = {"USERS_NEW_ACCOUNT_PASSWORD": "admin-password-2026"}
    args = ["admin", "create", "--email", "root@example.com", "--name", "Root"]

    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        args,
        env={"USERS_DATA_DIR": str(tmp_path), "USERS_BROKER_URL": "", "USERS_DATABASE_URL": "", **env},
    )

    assert result.exit_code == 0, result.output
    async with start_users(tmp_path) as users:
        await users.sign_in("root@example.com", "admin-password-2026")

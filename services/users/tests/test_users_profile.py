"""Profile: read and change name, phone (E.164) and notification preferences; fields a client may not set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from microshop_kit import db as dbmod
from microshop_users.app import MIGRATIONS
from microshop_users.passwords import PasswordHasher

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from conftest import UsersApp

    StartUsers = Callable[..., AbstractAsyncContextManager[UsersApp]]

PROBLEM_JSON = "application/problem+json"


def _fields(problem: dict[str, Any]) -> list[str]:
    return [".".join(str(part) for part in error["loc"][1:]) for error in problem.get("errors", [])]


async def _patch(users: UsersApp, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await users.client.patch("/api/v1/users/me", json=body, headers=headers)
    return response.status_code, response.json()


async def test_patch_changes_only_the_fields_sent_and_get_shows_them(users: UsersApp) -> None:
    created = await users.register()
    headers = await users.bearer()

    status, changed = await _patch(
        users,
        headers,
        {"name": "  Ada King ", "phone": "+44 7700-900 123", "notification_preferences": {"email_marketing": True}},
    )
    status_2, changed_2 = await _patch(users, headers, {"notification_preferences": {"sms_order_updates": True}})
    me = await users.client.get("/api/v1/users/me", headers=headers)

    assert (status, status_2) == (200, 200), (changed, changed_2)
    assert changed["name"] == "Ada King"
    assert changed["phone"] == "+447700900123"  # stored in E.164, the form an SMS provider takes
    assert changed_2["notification_preferences"] == {"email_marketing": True, "sms_order_updates": True}
    assert me.json() == changed_2
    assert {k: me.json()[k] for k in ("id", "email", "roles", "created_at")} == {
        k: created[k] for k in ("id", "email", "roles", "created_at")
    }


async def test_phone_null_removes_it_and_an_empty_patch_changes_nothing(users: UsersApp) -> None:
    await users.register()
    headers = await users.bearer()
    await _patch(users, headers, {"phone": "+14155550100"})

    unchanged = await _patch(users, headers, {})
    cleared = await _patch(users, headers, {"phone": None})

    assert unchanged == (200, {**unchanged[1], "phone": "+14155550100"})
    assert cleared[0] == 200
    assert cleared[1]["phone"] is None


async def test_a_contact_change_is_published_once_per_real_change(users: UsersApp) -> None:
    created = await users.register()
    headers = await users.bearer()
    await _patch(users, headers, {"phone": "+447700900123", "notification_preferences": {"sms_order_updates": True}})
    await _patch(users, headers, {"phone": "+44 7700 900123"})  # the same number: nothing changed

    db = users.app.state.kit.database
    outbox = await db.fetch("SELECT type, payload FROM outbox ORDER BY seq")
    assert [row["type"] for row in outbox] == ["user.registered.v1", "user.contact_changed.v1"]
    assert json.loads(outbox[1]["payload"])["data"] == {
        "user_id": created["id"],
        "email": created["email"],
        "name": created["name"],
        "phone": "+447700900123",
        "email_marketing": False,
        "sms_order_updates": True,
    }


INVALID_CHANGES: list[tuple[dict[str, Any], str]] = [
    ({"phone": "07700 900123"}, "phone"),  # national format: no country code
    ({"phone": "+0441234"}, "phone"),  # country codes never start with 0
    ({"phone": "+1234567890123456"}, "phone"),  # 16 digits: longer than E.164 allows
    ({"phone": "+44 (0) 7700 900123"}, "phone"),
    ({"name": "   "}, "name"),
    ({"name": None}, "name"),
    ({"notification_preferences": {"email_marketing": "yes"}}, "notification_preferences.email_marketing"),
    ({"notification_preferences": {"email_marketing": None}}, "notification_preferences.email_marketing"),
    ({"notification_preferences": {"push": True}}, "notification_preferences.push"),
    ({"notification_preferences": {"sms_order_updates": True}}, "notification_preferences.sms_order_updates"),
]


async def test_invalid_profile_changes_are_422_naming_the_field_and_change_nothing(users: UsersApp) -> None:
    created = await users.register()
    headers = await users.bearer()

    for body, field in INVALID_CHANGES:  # one account for all: each case is a request, not a sign-up
        response = await users.client.patch("/api/v1/users/me", json=body, headers=headers)

        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert field in _fields(response.json()), (body, response.text)
    assert (await users.client.get("/api/v1/users/me", headers=headers)).json() == created


async def test_sms_updates_need_a_phone_so_the_phone_cannot_be_removed_while_they_are_on(users: UsersApp) -> None:
    await users.register()
    headers = await users.bearer()
    status, _ = await _patch(
        users, headers, {"phone": "+447700900123", "notification_preferences": {"sms_order_updates": True}}
    )

    refused = await users.client.patch("/api/v1/users/me", json={"phone": None}, headers=headers)
    both = await _patch(users, headers, {"phone": None, "notification_preferences": {"sms_order_updates": False}})

    assert status == 200
    assert refused.status_code == 422
    assert _fields(refused.json()) == ["phone"]
    assert both[0] == 200
    assert (both[1]["phone"], both[1]["notification_preferences"]["sms_order_updates"]) == (None, False)


PROTECTED = {
    "role": "admin",
    "roles": ["admin"],
    "id": "00000000-0000-0000-0000-000000000000",
    "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$x$y",
    "created_at": "2000-01-01T00:00:00Z",
    "email": "someone-else@example.com",
}


async def test_patch_refuses_fields_a_client_may_not_set(users: UsersApp) -> None:
    created = await users.register()
    headers = await users.bearer()

    for field, value in PROTECTED.items():
        response = await users.client.patch("/api/v1/users/me", json={"name": "Mallory", field: value}, headers=headers)

        assert response.status_code == 422, response.text
        assert _fields(response.json()) == [field]
    assert (await users.client.get("/api/v1/users/me", headers=headers)).json() == created  # nothing changed


ADDRESS = {"name": "A", "line1": "1 Way", "city": "X", "postal_code": "1", "country": "GB"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/users", {"email": "b@example.com", "password": "correct-horse-battery", "name": "B"}),
        ("POST", "/api/v1/users/me/addresses", ADDRESS),
        ("PATCH", "/api/v1/users/me/addresses/{address_id}", {"city": "Y"}),
        ("POST", "/api/v1/users/me/password", {"current_password": "x", "new_password": "y-long-password"}),
        ("DELETE", "/api/v1/users/me", {"password": "correct-horse-battery"}),
    ],
)
async def test_every_mutation_refuses_protected_fields(
    users: UsersApp, method: str, path: str, body: dict[str, Any]
) -> None:
    await users.register()
    headers = await users.bearer()
    address = await users.client.post("/api/v1/users/me/addresses", json=ADDRESS, headers=headers)
    path = path.format(address_id=address.json()["id"])

    for field in ("role", "roles", "id", "password_hash", "created_at", "is_admin", "user_id"):
        response = await users.client.request(method, path, json={**body, field: "x"}, headers=headers)

        assert response.status_code == 422, (field, response.text)
        assert _fields(response.json()) == [field]
    assert (await users.client.get("/api/v1/users/me", headers=headers)).status_code == 200  # account still there
    assert (await users.client.get(f"/api/v1/users/me/addresses/{address.json()['id']}", headers=headers)).json() == (
        address.json()
    )


async def test_profile_routes_need_a_token(users: UsersApp) -> None:
    assert (await users.client.get("/api/v1/users/me")).status_code == 401
    assert (await users.client.patch("/api/v1/users/me", json={"name": "X"})).status_code == 401


async def test_internal_lookup_reflects_the_changed_name(users: UsersApp) -> None:
    created = await users.register()
    headers = await users.bearer()
    await _patch(users, headers, {"name": "Ada King"})

    found = (await users.client.get(f"/internal/v1/users/{created['id']}")).json()

    assert found["name"] == "Ada King"


async def test_accounts_made_before_the_profile_migration_read_with_defaults(
    tmp_path: Path, start_users: StartUsers
) -> None:
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    shutil.copy(MIGRATIONS / "0001_init.sql", first_only)
    database = await dbmod.connect(f"sqlite:///{tmp_path / 'users.db'}")
    await database.migrate("users", first_only)
    await database.execute(
        "INSERT INTO users (id, email, name, password_hash, roles, active, created_at) "
        "VALUES ('old', 'old@example.com', 'Old', :hash, '[\"customer\"]', 1, '2025-01-01T00:00:00+00:00')",
        {"hash": await PasswordHasher().hash("correct-horse-battery")},
    )
    await database.close()

    async with start_users(tmp_path) as users:
        me = await users.client.get("/api/v1/users/me", headers=await users.bearer("old@example.com"))

    assert me.status_code == 200, me.text
    assert (me.json()["phone"], me.json()["notification_preferences"]) == (
        None,
        {"email_marketing": False, "sms_order_updates": False},
    )

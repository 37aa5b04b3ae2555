"""Admin views: list and filter accounts, read one with its lockout state, unlock; admins only."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from microshop_kit.testing import JwtIssuer

if TYPE_CHECKING:
    from conftest import UsersApp

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def root(users: UsersApp) -> dict[str, str]:
    return await users.admin()


async def _register_many(users: UsersApp, *emails: str) -> None:
    for email in emails:
        await users.app.state.accounts.register(email=email, password=PASSWORD, name=email.split("@")[0])


async def test_customers_get_403_and_anonymous_callers_401(users: UsersApp) -> None:
    created = await users.register()
    customer = await users.bearer()
    forged_admin = JwtIssuer().headers(created["id"], roles=["admin"])  # admin claim, key nobody published
    routes = [
        ("GET", "/api/v1/admin/users"),
        ("GET", f"/api/v1/admin/users/{created['id']}"),
        ("POST", f"/api/v1/admin/users/{created['id']}/unlock"),
    ]

    for method, path in routes:
        assert (await users.client.request(method, path, headers=customer)).status_code == 403, path
        assert (await users.client.request(method, path)).status_code == 401, path
        assert (await users.client.request(method, path, headers=forged_admin)).status_code == 401, path


async def test_list_is_paged_newest_first_and_filters_by_email_substring(users: UsersApp, root: dict[str, str]) -> None:
    await _register_many(users, "ann@shop.example", "bob@shop.example", "cy@other.example", "a_b@shop.example")

    everyone = (await users.client.get("/api/v1/admin/users", params={"limit": 2}, headers=root)).json()
    second = (await users.client.get("/api/v1/admin/users", params={"limit": 2, "page": 2}, headers=root)).json()
    shop = (await users.client.get("/api/v1/admin/users", params={"email": "@SHOP."}, headers=root)).json()
    underscore = (await users.client.get("/api/v1/admin/users", params={"email": "a_b"}, headers=root)).json()

    assert (everyone["total"], everyone["page"], everyone["limit"], len(everyone["items"])) == (5, 1, 2, 2)
    assert [u["email"] for u in everyone["items"]] == ["a_b@shop.example", "cy@other.example"]
    assert [u["email"] for u in second["items"]] == ["bob@shop.example", "ann@shop.example"]
    assert shop["total"] == 3
    assert [u["email"] for u in underscore["items"]] == ["a_b@shop.example"]  # "_" is a letter, not a wildcard
    assert set(everyone["items"][0]) == {
        "id",
        "email",
        "name",
        "phone",
        "roles",
        "active",
        "created_at",
        "deleted_at",
        "failed_sign_ins",
        "locked_until",
    }


async def test_page_limits_are_enforced(users: UsersApp, root: dict[str, str]) -> None:
    for params in ({"limit": 100_000}, {"limit": 0}, {"page": 0}, {"email": "x" * 300}):
        response = await users.client.get("/api/v1/admin/users", params=params, headers=root)
        assert response.status_code == 422, params


async def test_read_one_account_with_its_sign_in_state_and_unlock_it(users: UsersApp, root: dict[str, str]) -> None:
    created = await users.register()
    url = f"/api/v1/admin/users/{created['id']}"
    sessions, admin = users.app.state.sessions, users.app.state.admin
    start = sessions.clock()
    for n in range(10):  # ten failures, each 100 s after the last: past any delay, within the lockout window
        sessions.clock = admin.clock = lambda n=n: start + timedelta(seconds=100 * n)
        response = await users.client.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": "x"})
        assert response.status_code == 401, response.text

    locked = (await users.client.get(url, headers=root)).json()
    refused = await users.client.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": PASSWORD})
    unlocked = await users.client.post(f"{url}/unlock", headers=root)
    after = await users.client.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": PASSWORD})

    assert (locked["email"], locked["failed_sign_ins"]) == ("ada@example.com", 10)
    assert locked["locked_until"] is not None
    assert refused.status_code == 429
    assert unlocked.status_code == 200
    assert (unlocked.json()["failed_sign_ins"], unlocked.json()["locked_until"]) == (0, None)
    assert after.status_code == 200


async def test_unknown_ids_are_404_and_deleted_accounts_show_anonymised(users: UsersApp, root: dict[str, str]) -> None:
    created = await users.register()
    tokens = await users.sign_in()
    await users.client.request(
        "DELETE",
        "/api/v1/users/me",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )

    missing = await users.client.get("/api/v1/admin/users/no-such-user", headers=root)
    unlock_missing = await users.client.post("/api/v1/admin/users/no-such-user/unlock", headers=root)
    deleted = (await users.client.get(f"/api/v1/admin/users/{created['id']}", headers=root)).json()

    assert (missing.status_code, unlock_missing.status_code) == (404, 404)
    assert deleted["deleted_at"] is not None
    assert deleted["active"] is False
    assert deleted["email"].endswith("@deleted.invalid")

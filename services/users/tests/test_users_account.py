"""Password change (signs out the other sessions) and account deletion (anonymised, tokens revoked, event)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import UsersApp

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "a-brand-new-passphrase"


async def _refresh(users: UsersApp, token: str) -> int:
    return (await users.client.post("/api/v1/auth/refresh", json={"refresh_token": token})).status_code


async def _change(users: UsersApp, access: str, **body: Any) -> Any:
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD, **body}
    return await users.client.post(
        "/api/v1/users/me/password", json=body, headers={"Authorization": f"Bearer {access}"}
    )


async def _sign_in_status(users: UsersApp, password: str, email: str = "ada@example.com") -> int:
    response = await users.client.post("/api/v1/auth/token", json={"email": email, "password": password})
    return response.status_code


# ------------------------------------------------------------------------------------------ change password


async def test_password_change_keeps_this_session_and_signs_out_the_others(users: UsersApp) -> None:
    await users.register()
    this, other, third = await users.sign_in(), await users.sign_in(), await users.sign_in()

    response = await _change(users, this["access_token"], refresh_token=this["refresh_token"])

    assert response.status_code == 204, response.text
    assert await _refresh(users, other["refresh_token"]) == 401
    assert await _refresh(users, third["refresh_token"]) == 401
    assert await _refresh(users, this["refresh_token"]) == 200  # this session's family lives on
    assert await _sign_in_status(users, PASSWORD) == 401
    assert await _sign_in_status(users, NEW_PASSWORD) == 200


async def test_password_change_without_a_refresh_token_signs_out_every_session(users: UsersApp) -> None:
    await users.register()
    this, other = await users.sign_in(), await users.sign_in()

    assert (await _change(users, this["access_token"])).status_code == 204

    assert await _refresh(users, this["refresh_token"]) == 401
    assert await _refresh(users, other["refresh_token"]) == 401


async def test_someone_elses_refresh_token_keeps_nothing(users: UsersApp) -> None:
    await users.register()
    await users.register(email="bob@example.com", name="Bob")
    ada, bob = await users.sign_in(), await users.sign_in("bob@example.com")

    assert (await _change(users, ada["access_token"], refresh_token=bob["refresh_token"])).status_code == 204

    assert await _refresh(users, ada["refresh_token"]) == 401
    assert await _refresh(users, bob["refresh_token"]) == 200  # Bob's own session is not Ada's to end


async def test_wrong_current_password_is_403_and_changes_nothing(users: UsersApp) -> None:
    await users.register()
    tokens = await users.sign_in()

    response = await _change(users, tokens["access_token"], current_password="not-my-password")

    assert response.status_code == 403
    assert response.json()["type"] == "/problems/wrong-password"
    assert await _refresh(users, tokens["refresh_token"]) == 200
    assert await _sign_in_status(users, PASSWORD) == 200


async def test_new_password_follows_the_policy(users: UsersApp) -> None:
    await users.register()
    tokens = await users.sign_in()

    response = await _change(users, tokens["access_token"], new_password="password1234")

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "password"]
    assert "password1234" not in response.text


async def test_wrong_current_passwords_are_throttled_like_sign_ins(users: UsersApp) -> None:
    await users.register()
    tokens = await users.sign_in()

    statuses = [
        (await _change(users, tokens["access_token"], current_password="guess-number-" + str(n))).status_code
        for n in range(4)
    ]
    right_but_too_soon = await _change(users, tokens["access_token"])

    # A stolen access token is no faster way to guess the password than the sign-in form.
    assert statuses == [403, 403, 403, 429]
    assert right_but_too_soon.status_code == 429
    assert await _sign_in_status(users, PASSWORD) == 429  # the same per-account counter


# ------------------------------------------------------------------------------------------ delete account


async def _delete(users: UsersApp, access: str, password: str = PASSWORD) -> Any:
    return await users.client.request(
        "DELETE", "/api/v1/users/me", json={"password": password}, headers={"Authorization": f"Bearer {access}"}
    )


async def test_delete_anonymises_revokes_and_publishes_user_deleted(users: UsersApp) -> None:
    created = await users.register()
    tokens = await users.sign_in()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    await users.client.patch("/api/v1/users/me", json={"phone": "+447700900123"}, headers=headers)
    await users.client.post(
        "/api/v1/users/me/addresses",
        json={"name": "Ada", "line1": "1 Way", "city": "London", "postal_code": "N1", "country": "GB"},
        headers=headers,
    )

    response = await _delete(users, tokens["access_token"])

    assert response.status_code == 204, response.text
    db = users.app.state.kit.database
    row = await db.fetchrow("SELECT * FROM users WHERE id = :id", {"id": created["id"]})
    assert row is not None  # kept, so orders that name this id still resolve to "a deleted user"
    stored = json.dumps(dict(row))
    assert "ada@example.com" not in stored
    assert "Lovelace" not in stored
    assert "+447700900123" not in stored
    assert (row["phone"], row["active"], row["password_hash"]) == (None, 0, "!")
    assert row["deleted_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM addresses") == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    outbox = await db.fetch("SELECT type, payload FROM outbox ORDER BY seq")
    assert [r["type"] for r in outbox] == ["user.registered.v1", "user.contact_changed.v1", "user.deleted.v1"]
    assert json.loads(outbox[-1]["payload"])["data"] == {"user_id": created["id"]}


async def test_a_deleted_account_is_gone_for_every_route(users: UsersApp) -> None:
    created = await users.register()
    tokens = await users.sign_in()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await _delete(users, tokens["access_token"])).status_code == 204

    # The access token itself stays valid until it expires (<= 15 min), but finds no account behind it.
    assert (await users.client.get("/api/v1/users/me", headers=headers)).status_code == 404
    assert (await users.client.patch("/api/v1/users/me", json={"name": "X"}, headers=headers)).status_code == 404
    assert (await users.client.get("/api/v1/users/me/addresses", headers=headers)).status_code == 404
    assert (await _delete(users, tokens["access_token"])).status_code == 404
    assert (await users.client.get(f"/internal/v1/users/{created['id']}")).status_code == 404
    assert await _refresh(users, tokens["refresh_token"]) == 401
    assert await _sign_in_status(users, PASSWORD) == 401
    again = await users.client.post(
        "/api/v1/users", json={"email": "ada@example.com", "password": PASSWORD, "name": "Ada again"}
    )
    assert again.status_code == 201  # the email is free again
    assert again.json()["id"] != created["id"]


async def test_delete_needs_the_password(users: UsersApp) -> None:
    created = await users.register()
    tokens = await users.sign_in()

    wrong = await _delete(users, tokens["access_token"], password="not-my-password")
    missing = await users.client.request(
        "DELETE", "/api/v1/users/me", json={}, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )

    assert wrong.status_code == 403
    assert missing.status_code == 422
    assert (await users.client.get(f"/internal/v1/users/{created['id']}")).json()["can_order"] is True
    assert await users.app.state.kit.database.fetchval("SELECT count(*) FROM outbox") == 1

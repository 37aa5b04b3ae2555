"""Users API: registration, sign-in, tokens and their JWKS, refresh rotation, profile, internal lookup."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from microshop_kit.testing import JwtIssuer, LeanCheck, compare_each_with_fastapi

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from conftest import UsersApp  # the ``users`` fixture

    StartUsers = Callable[..., AbstractAsyncContextManager[UsersApp]]

PROBLEM_JSON = "application/problem+json"
PASSWORD = "correct-horse-battery"  # what the fixture's register() uses by default


def _field_names(problem: dict[str, Any]) -> list[str]:
    return [".".join(str(part) for part in error["loc"][1:]) for error in problem.get("errors", [])]


async def _bearer(users: UsersApp, email: str = "ada@example.com") -> dict[str, str]:
    tokens = await users.sign_in(email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


# ----------------------------------------------------------------------------------------------- register


async def test_register_sign_in_and_read_profile_round_trip(users: UsersApp) -> None:
    created = await users.register(email="  Ada@Example.COM ", name=" Ada Lovelace ")

    assert created["email"] == "ada@example.com"
    assert created["name"] == "Ada Lovelace"
    assert created["roles"] == ["customer"]
    assert set(created) == {"id", "email", "name", "phone", "notification_preferences", "roles", "created_at"}
    assert (created["phone"], created["notification_preferences"]) == (
        None,
        {"email_marketing": False, "sms_order_updates": False},
    )
    tokens = await users.sign_in("ADA@example.com")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    me = await users.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json() == created


async def test_registration_publishes_user_registered_through_the_outbox(users: UsersApp) -> None:
    created = await users.register()

    rows = await users.app.state.kit.database.fetch("SELECT type, payload FROM outbox")
    assert [row["type"] for row in rows] == ["user.registered.v1"]
    assert created["id"] in rows[0]["payload"]
    assert PASSWORD not in rows[0]["payload"]


async def test_duplicate_email_differing_only_in_case_is_409(users: UsersApp) -> None:
    await users.register(email="ada@example.com")

    response = await users.client.post(
        "/api/v1/users", json={"email": " ADA@example.com", "password": "another-long-password", "name": "Ada 2"}
    )

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == "/problems/email-taken"
    rows = await users.app.state.kit.database.fetch("SELECT type FROM outbox")
    assert len(rows) == 1  # the refused registration published nothing


@pytest.mark.parametrize("password", ["short-pw", "Password1234", "qwerty123456", "aaaaaaaaaaaaaaaa"])
async def test_weak_password_is_422_naming_password(users: UsersApp, password: str) -> None:
    response = await users.client.post(
        "/api/v1/users", json={"email": "ada@example.com", "password": password, "name": "Ada"}
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert _field_names(problem) == ["password"]
    assert password not in response.text  # a password is never echoed, not even a refused one


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "name": "Ada"}, "email"),
        ({"email": "ada@localhost", "password": PASSWORD, "name": "Ada"}, "email"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": "   "}, "name"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": "x" * 101}, "name"),
        ({"email": "ada@example.com", "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "password": 123456789012345, "name": "Ada"}, "password"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "roles": ["admin"]}, "roles"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "id": "mine"}, "id"),
    ],
)
async def test_bad_registration_input_is_422_naming_the_field(
    users: UsersApp, body: dict[str, Any], field: str
) -> None:
    response = await users.client.post("/api/v1/users", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert field in _field_names(response.json())


@pytest.mark.parametrize("path", ["/api/v1/users", "/api/v1/auth/token", "/api/v1/auth/refresh", "/api/v1/auth/logout"])
async def test_malformed_json_is_422_problem(users: UsersApp, path: str) -> None:
    response = await users.client.post(path, content=b'{"email": ', headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == "/problems/validation"


async def test_unknown_fields_on_sign_in_and_refresh_are_422(users: UsersApp) -> None:
    sign_in = await users.client.post(
        "/api/v1/auth/token", json={"email": "a@example.com", "password": PASSWORD, "scope": "admin"}
    )
    refresh = await users.client.post("/api/v1/auth/refresh", json={"refresh_token": "x", "user_id": "y"})

    assert (sign_in.status_code, refresh.status_code) == (422, 422)
    assert _field_names(sign_in.json()) == ["scope"]
    assert _field_names(refresh.json()) == ["user_id"]


async def test_stored_hash_is_argon2id_with_owasp_parameters(users: UsersApp) -> None:
    import argon2

    created = await users.register()

    stored = await users.app.state.kit.database.fetchval(
        "SELECT password_hash FROM users WHERE id = :id", {"id": created["id"]}
    )
    parameters = argon2.extract_parameters(stored)
    assert parameters.type is argon2.Type.ID
    assert parameters.memory_cost >= 19_456
    assert (parameters.time_cost, parameters.parallelism) == (2, 1)
    assert PASSWORD not in stored


# ------------------------------------------------------------------------------------------------ sign-in


async def test_token_claims_verify_with_the_published_jwks(users: UsersApp) -> None:
    created = await users.register()
    tokens = await users.sign_in()

    published = await users.client.get("/.well-known/jwks.json")
    assert published.headers["cache-control"] == "public, max-age=300"
    keys = published.json()["keys"]
    assert len(keys) == 1
    assert {k: keys[0][k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in keys[0]  # the private part never leaves
    header = jwt.get_unverified_header(tokens["access_token"])
    assert (header["alg"], header["kid"]) == ("EdDSA", keys[0]["kid"])
    claims = jwt.decode(
        tokens["access_token"], jwt.PyJWK(keys[0]), algorithms=["EdDSA"], audience="microshop", issuer="microshop-users"
    )
    assert claims["sub"] == created["id"]
    assert claims["email"] == "ada@example.com"
    assert claims["roles"] == ["customer"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]


async def test_each_token_gets_its_own_jti(users: UsersApp) -> None:
    await users.register()
    first, second = await users.sign_in(), await users.sign_in()

    jtis = {jwt.decode(t["access_token"], options={"verify_signature": False})["jti"] for t in (first, second)}
    assert len(jtis) == 2
    assert first["refresh_token"] != second["refresh_token"]


Attempt = tuple[float, int, dict[str, Any]]


async def _failed_sign_ins(users: UsersApp) -> tuple[list[Attempt], list[Attempt]]:
    async def attempt(email: str, password: str) -> Attempt:
        started = time.perf_counter()
        response = await users.client.post("/api/v1/auth/token", json={"email": email, "password": password})
        return time.perf_counter() - started, response.status_code, response.json()

    wrong, unknown = [], []
    for _ in range(5):  # interleaved, so a burst of load on the machine slows both kinds alike
        wrong.append(await attempt("ada@example.com", "not-the-password"))
        unknown.append(await attempt("nobody@example.com", "not-the-password"))
    return wrong, unknown


async def test_wrong_password_and_unknown_email_get_the_same_401(tmp_path: Path, start_users: StartUsers) -> None:
    # Ten failures answered without delay, so the five of each kind here all reach the password check.
    async with start_users(tmp_path, login_free_failures=10, login_lockout_failures=11) as users:
        await users.register()
        wrong, unknown = await _failed_sign_ins(users)

    assert {status for _, status, _ in wrong + unknown} == {401}
    assert wrong[0][2] == unknown[0][2]
    assert wrong[0][2]["type"] == "/problems/invalid-credentials"
    # Both run one argon2 verification (~40 ms); skipping it for unknown emails would make them ~50x faster.
    # Minimums, because load only ever adds time.
    ratio = min(t for t, _, _ in unknown) / min(t for t, _, _ in wrong)
    assert ratio > 0.4, ratio


async def test_inactive_account_cannot_sign_in(users: UsersApp) -> None:
    created = await users.register()
    await users.app.state.kit.database.execute("UPDATE users SET active = 0 WHERE id = :id", {"id": created["id"]})

    response = await users.client.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": PASSWORD})

    assert response.status_code == 401
    assert response.json()["type"] == "/problems/invalid-credentials"


async def test_token_responses_are_not_cached(users: UsersApp) -> None:
    await users.register()
    response = await users.client.post("/api/v1/auth/token", json={"email": "ada@example.com", "password": PASSWORD})

    assert response.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------------ refresh


async def _refresh(users: UsersApp, token: str) -> tuple[int, dict[str, Any]]:
    response = await users.client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    return response.status_code, response.json()


async def test_refresh_rotates_and_spends_the_old_token(users: UsersApp) -> None:
    created = await users.register()
    first = await users.sign_in()

    status, second = await _refresh(users, first["refresh_token"])

    assert status == 200, second
    assert second["refresh_token"] != first["refresh_token"]
    claims = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert claims["sub"] == created["id"]
    assert (await _refresh(users, second["refresh_token"]))[0] == 200
    stored = await users.app.state.kit.database.fetch("SELECT token_hash FROM refresh_tokens")
    assert all(first["refresh_token"] not in row["token_hash"] for row in stored)  # only hashes are kept


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(users: UsersApp) -> None:
    await users.register()
    first = await users.sign_in()
    other_session = await users.sign_in()
    _, second = await _refresh(users, first["refresh_token"])

    status, problem = await _refresh(users, first["refresh_token"])  # replayed, e.g. by a thief

    assert status == 401
    assert problem["type"] == "/problems/invalid-refresh-token"
    assert (await _refresh(users, second["refresh_token"]))[0] == 401  # the legitimate successor is dead too
    assert (await _refresh(users, other_session["refresh_token"]))[0] == 200  # other families are untouched


async def test_unknown_and_expired_refresh_tokens_are_401(users: UsersApp) -> None:
    await users.register()
    tokens = await users.sign_in()
    assert (await _refresh(users, "no-such-token"))[0] == 401

    sessions = users.app.state.sessions
    real_clock = sessions.clock
    sessions.clock = lambda: real_clock() + timedelta(seconds=users.settings.refresh_token_ttl + 1)

    assert (await _refresh(users, tokens["refresh_token"]))[0] == 401


async def test_logout_revokes_the_family(users: UsersApp) -> None:
    await users.register()
    first = await users.sign_in()
    _, second = await _refresh(users, first["refresh_token"])

    response = await users.client.post("/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]})

    assert response.status_code == 204
    assert (await _refresh(users, second["refresh_token"]))[0] == 401
    unknown = await users.client.post("/api/v1/auth/logout", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204  # RFC 7009: revoking an unknown token is not an error


# ----------------------------------------------------------------------------------------------- profile


async def test_me_needs_a_valid_token(users: UsersApp) -> None:
    created = await users.register()
    foreign = JwtIssuer()  # a well-formed token signed by a key the users service never published

    missing = await users.client.get("/api/v1/users/me")
    forged = await users.client.get("/api/v1/users/me", headers=foreign.headers(created["id"]))

    assert (missing.status_code, forged.status_code) == (401, 401)
    assert forged.headers["content-type"] == PROBLEM_JSON


async def test_me_is_404_once_the_account_is_gone(users: UsersApp) -> None:
    created = await users.register()
    headers = await _bearer(users)
    await users.app.state.kit.database.execute("DELETE FROM users WHERE id = :id", {"id": created["id"]})

    response = await users.client.get("/api/v1/users/me", headers=headers)

    assert response.status_code == 404
    assert response.json()["type"] == "/problems/not-found"


async def test_no_response_carries_the_password_hash(users: UsersApp) -> None:
    created = await users.register()
    headers = await _bearer(users)

    bodies = [
        json.dumps(created),
        (await users.client.get("/api/v1/users/me", headers=headers)).text,
        (await users.client.get(f"/internal/v1/users/{created['id']}")).text,
    ]

    assert not any("argon2" in body or "password" in body for body in bodies)


# ---------------------------------------------------------------------------------------------- internal


async def test_internal_lookup(users: UsersApp) -> None:
    created = await users.register()

    found = await users.client.get(f"/internal/v1/users/{created['id']}")
    missing = await users.client.get("/internal/v1/users/00000000-0000-0000-0000-000000000000")

    assert found.status_code == 200
    assert found.json() == {
        "id": created["id"],
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "active": True,
        "can_order": True,
    }
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_JSON


async def test_internal_lookup_answers_as_fastapi_does(users: UsersApp) -> None:
    """The internal router's routes are lean routes (microshop_kit.lean): byte for byte FastAPI's own answers."""
    created = await users.register()
    checks: list[LeanCheck] = [
        ("GET", f"/internal/v1/users/{created['id']}", True, {}),
        ("GET", "/internal/v1/users/00000000-0000-0000-0000-000000000000", True, {}),
        ("GET", "/internal/v1/users/" + "x" * 200, False, {}),
    ]
    assert await compare_each_with_fastapi(users.client, checks) == [200, 404, 422]


async def test_internal_lookup_of_an_inactive_account_says_it_cannot_order(users: UsersApp) -> None:
    created = await users.register()
    await users.app.state.kit.database.execute("UPDATE users SET active = 0 WHERE id = :id", {"id": created["id"]})

    found = (await users.client.get(f"/internal/v1/users/{created['id']}")).json()

    assert (found["active"], found["can_order"]) == (False, False)


async def test_email_uniqueness_is_a_database_constraint(users: UsersApp) -> None:
    from microshop_kit.errors import IntegrityError

    await users.register()
    row = dict(await users.app.state.kit.database.fetchrow("SELECT * FROM users"))
    row["id"] = "another-id"

    with pytest.raises(IntegrityError):
        await users.app.state.kit.database.execute(
            "INSERT INTO users (id, email, name, password_hash, roles, active, created_at) "
            "VALUES (:id, :email, :name, :password_hash, :roles, :active, :created_at)",
            row,
        )


async def test_openapi_documents_the_public_and_internal_routes(users: UsersApp) -> None:
    paths = (await users.client.get("/openapi.json")).json()["paths"]

    assert {
        "/api/v1/users",
        "/api/v1/auth/token",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/users/me",
        "/.well-known/jwks.json",
        "/internal/v1/users/{user_id}",
    } <= set(paths)

"""Address book: create, list, read, change, delete; exactly one default; the cap; nobody else's addresses."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from microshop_kit.errors import IntegrityError

if TYPE_CHECKING:
    from conftest import UsersApp

BASE = "/api/v1/users/me/addresses"
HOME = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "gb",
    "phone": "+44 20 7946 0000",
}
WORK = {"name": "Ada at work", "line1": "1 Analytical Way", "line2": "Floor 2", "city": "Paris", "postal_code": "75001"}


def _fields(problem: dict[str, Any]) -> list[str]:
    return [".".join(str(part) for part in error["loc"][1:]) for error in problem.get("errors", [])]


async def _add(users: UsersApp, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {**HOME, **fields}
    response = await users.client.post(BASE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _list(users: UsersApp, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await users.client.get(BASE, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
async def ada(users: UsersApp) -> dict[str, str]:
    await users.register()
    return await users.bearer()


async def test_create_read_list_change_and_delete(users: UsersApp, ada: dict[str, str]) -> None:
    response = await users.client.post(BASE, json=HOME, headers=ada)
    created = response.json()

    assert response.status_code == 201
    assert response.headers["location"] == f"{BASE}/{created['id']}"
    assert created["country"] == "GB"  # ISO 3166-1 alpha-2, upper case
    assert created["phone"] == "+442079460000"
    assert (created["line2"], created["is_default"]) == (None, True)  # the first address is the default
    assert (await users.client.get(f"{BASE}/{created['id']}", headers=ada)).json() == created
    assert await _list(users, ada) == [created]

    changed = await users.client.patch(f"{BASE}/{created['id']}", json={"city": "Bath", "phone": None}, headers=ada)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["city"], changed.json()["phone"], changed.json()["line1"]) == ("Bath", None, HOME["line1"])
    assert changed.json()["updated_at"] >= created["updated_at"]

    deleted = await users.client.delete(f"{BASE}/{created['id']}", headers=ada)
    assert deleted.status_code == 204
    assert (await users.client.get(f"{BASE}/{created['id']}", headers=ada)).status_code == 404
    assert await _list(users, ada) == []


async def test_a_new_default_unsets_the_old_one(users: UsersApp, ada: dict[str, str]) -> None:
    home = await _add(users, ada)
    work = await _add(users, ada, **WORK, country="FR")
    assert work["is_default"] is False

    third = await _add(users, ada, name="Third", is_default=True)
    moved = await users.client.patch(f"{BASE}/{work['id']}", json={"is_default": True}, headers=ada)

    assert moved.json()["is_default"] is True
    listed = await _list(users, ada)
    assert [a["id"] for a in listed if a["is_default"]] == [work["id"]]
    assert listed[0]["id"] == work["id"]  # the default comes first
    assert {a["id"] for a in listed} == {home["id"], work["id"], third["id"]}


async def test_the_default_cannot_be_unset_only_moved(users: UsersApp, ada: dict[str, str]) -> None:
    home = await _add(users, ada)
    work = await _add(users, ada, is_default=False)

    refused = await users.client.patch(f"{BASE}/{home['id']}", json={"is_default": False}, headers=ada)
    harmless = await users.client.patch(f"{BASE}/{work['id']}", json={"is_default": False}, headers=ada)

    assert refused.status_code == 422
    assert _fields(refused.json()) == ["is_default"]
    assert harmless.status_code == 200
    assert [a["id"] for a in await _list(users, ada) if a["is_default"]] == [home["id"]]


async def test_deleting_the_default_promotes_the_oldest_remaining(users: UsersApp, ada: dict[str, str]) -> None:
    first = await _add(users, ada, name="First")
    second = await _add(users, ada, name="Second")
    third = await _add(users, ada, name="Third", is_default=True)

    await users.client.delete(f"{BASE}/{third['id']}", headers=ada)

    listed = await _list(users, ada)
    assert [(a["id"], a["is_default"]) for a in listed] == [(first["id"], True), (second["id"], False)]


async def test_an_account_keeps_at_most_twenty_addresses(users: UsersApp, ada: dict[str, str]) -> None:
    for number in range(20):
        await _add(users, ada, line1=f"{number} Long Street")

    refused = await users.client.post(BASE, json=HOME, headers=ada)

    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/too-many-addresses"
    assert len(await _list(users, ada)) == 20


async def test_concurrent_adds_keep_the_cap_and_one_default(users: UsersApp, ada: dict[str, str]) -> None:
    responses = await asyncio.gather(
        *(users.client.post(BASE, json={**HOME, "is_default": True}, headers=ada) for _ in range(25))
    )

    assert sorted(r.status_code for r in responses) == [201] * 20 + [409] * 5
    assert sum(a["is_default"] for a in await _list(users, ada)) == 1


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"country": "ZZ"}, "country"),  # two letters, but not an assigned code
    ({"country": "GBR"}, "country"),  # alpha-3
    ({"country": None}, "country"),
    ({"line1": "   "}, "line1"),
    ({"city": ""}, "city"),
    ({"postal_code": "x" * 21}, "postal_code"),
    ({"phone": "020 7946 0000"}, "phone"),
    ({"is_default": "yes"}, "is_default"),
]


async def test_invalid_fields_are_422_naming_the_field(users: UsersApp, ada: dict[str, str]) -> None:
    existing = await _add(users, ada)

    for change, field in INVALID:
        created = await users.client.post(BASE, json={**HOME, **change}, headers=ada)
        changed = await users.client.patch(f"{BASE}/{existing['id']}", json=change, headers=ada)

        assert (created.status_code, changed.status_code) == (422, 422), (change, created.text, changed.text)
        assert field in _fields(created.json()), (change, created.text)
        assert field in _fields(changed.json()), (change, changed.text)
    missing = await users.client.post(BASE, json={"name": "No lines"}, headers=ada)
    assert {"line1", "city", "postal_code", "country"} <= set(_fields(missing.json()))
    assert await _list(users, ada) == [existing]


async def test_another_users_address_is_not_found(users: UsersApp, ada: dict[str, str]) -> None:
    address = await _add(users, ada)
    await users.register(email="bob@example.com", name="Bob")
    bob = await users.bearer("bob@example.com")
    url = f"{BASE}/{address['id']}"

    answers = [
        await users.client.get(url, headers=bob),
        await users.client.patch(url, json={"city": "Hijacked"}, headers=bob),
        await users.client.patch(url, json={"is_default": True}, headers=bob),
        await users.client.delete(url, headers=bob),
    ]

    assert [a.status_code for a in answers] == [404] * 4
    assert {a.json()["type"] for a in answers} == {"/problems/not-found"}
    never = await users.client.get(f"{BASE}/{address['id'][::-1]}", headers=ada)
    assert answers[0].json()["detail"].replace(address["id"], "?") == never.json()["detail"].replace(
        address["id"][::-1], "?"
    )  # the same answer as for an id that never existed
    assert await _list(users, bob) == []
    assert await _list(users, ada) == [address]


async def test_address_routes_need_a_token(users: UsersApp) -> None:
    assert (await users.client.get(BASE)).status_code == 401
    assert (await users.client.post(BASE, json=HOME)).status_code == 401


async def test_one_default_per_user_is_a_database_constraint(users: UsersApp, ada: dict[str, str]) -> None:
    address = await _add(users, ada)
    db = users.app.state.kit.database
    row = dict(await db.fetchrow("SELECT * FROM addresses WHERE id = :id", {"id": address["id"]}))

    with pytest.raises(IntegrityError):
        await db.execute(
            f"INSERT INTO addresses ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",
            {**row, "id": "another"},
        )

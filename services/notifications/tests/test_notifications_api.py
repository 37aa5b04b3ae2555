"""GET /api/v1/notifications: a user sees their own messages, an admin everyone's; bad input is a 4xx."""

from __future__ import annotations

from typing import TYPE_CHECKING

from microshop_contracts import Envelope, UserRegistered
from microshop_kit.testing import JwtIssuer

if TYPE_CHECKING:
    from conftest import Service, Tools


async def _seed(service: Service, tools: Tools) -> dict[str, str]:
    """Three messages: two for Ada (an order, a welcome), one for Bob; returns event ids by name."""
    events = {
        "ada-order": Envelope.wrap(tools.order_confirmed("user-ada", "ada@example.com"), source="orders"),
        "ada-welcome": Envelope.wrap(
            UserRegistered(user_id="user-ada", email="ada@example.com", name="Ada"), source="users"
        ),
        "bob-welcome": Envelope.wrap(
            UserRegistered(user_id="user-bob", email="bob@example.com", name="Bob"), source="users"
        ),
    }
    for envelope in events.values():
        await service.deliver(envelope)
    return {name: envelope.id for name, envelope in events.items()}


async def test_a_user_sees_only_their_own_messages_newest_first(
    tools: Tools, issuer: JwtIssuer, smtp_port: int
) -> None:
    async with tools.running(tools.settings(smtp_port)) as service:
        ids = await _seed(service, tools)
        await tools.eventually(lambda: _all_sent(service))
        response = await service.client.get("/api/v1/notifications", headers=issuer.headers("user-ada"))
        rows = {row["event_id"]: row for row in await service.messages()}

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["id"] for item in items] == [rows[ids["ada-welcome"]]["id"], rows[ids["ada-order"]]["id"]]
    assert items[0] == {
        "id": rows[ids["ada-welcome"]]["id"],
        "channel": "email",
        "subject": "Welcome to microshop",
        "status": "sent",
        "created_at": rows[ids["ada-welcome"]]["created_at"],
        "sent_at": rows[ids["ada-welcome"]]["sent_at"],
    }
    assert items[0]["sent_at"] is not None


async def _all_sent(service: Service) -> bool:
    return all(row["status"] == "sent" for row in await service.messages())


async def test_an_admin_sees_everyone_s_messages_with_all(tools: Tools, issuer: JwtIssuer, smtp_port: int) -> None:
    async with tools.running(tools.settings(smtp_port)) as service:
        await _seed(service, tools)
        admin = issuer.headers("user-admin", roles=["admin"])
        everyone = await service.client.get("/api/v1/notifications", params={"all": "true"}, headers=admin)
        own = await service.client.get("/api/v1/notifications", headers=admin)
        limited = await service.client.get("/api/v1/notifications?all=true&limit=1", headers=admin)

    assert everyone.status_code == 200
    assert len(everyone.json()["items"]) == 3
    assert own.json()["items"] == []
    assert len(limited.json()["items"]) == 1


async def test_a_customer_asking_for_all_is_forbidden(tools: Tools, issuer: JwtIssuer, smtp_port: int) -> None:
    async with tools.running(tools.settings(smtp_port)) as service:
        await _seed(service, tools)
        response = await service.client.get("/api/v1/notifications?all=true", headers=issuer.headers("user-ada"))

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/forbidden"


async def test_without_a_valid_token_it_is_401(tools: Tools, smtp_port: int) -> None:
    stranger = JwtIssuer()  # signs with a key the service does not trust
    async with tools.running(tools.settings(smtp_port)) as service:
        missing = await service.client.get("/api/v1/notifications")
        foreign = await service.client.get("/api/v1/notifications", headers=stranger.headers("user-ada"))

    for response in (missing, foreign):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


async def test_bad_query_values_are_422_naming_the_field(tools: Tools, issuer: JwtIssuer, smtp_port: int) -> None:
    headers = issuer.headers("user-ada")
    async with tools.running(tools.settings(smtp_port)) as service:
        answers = {
            query: await service.client.get(f"/api/v1/notifications?{query}", headers=headers)
            for query in ("limit=100000", "limit=0", "limit=-1", "limit=ten", "all=perhaps")
        }

    for query, response in answers.items():
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"
        assert query.split("=")[0] in response.json()["detail"]


async def test_only_get_is_allowed(tools: Tools, issuer: JwtIssuer, smtp_port: int) -> None:
    async with tools.running(tools.settings(smtp_port)) as service:
        response = await service.client.post(
            "/api/v1/notifications", headers=issuer.headers("user-ada"), json={"subject": "x"}
        )

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"

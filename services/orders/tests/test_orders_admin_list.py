"""The admin's order list (GET /api/v1/admin/orders), on SQLite and on PostgreSQL: every customer's orders newest
first, the status filter, the page-size cap, and who may read it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microshop_kit.db import Database
from microshop_kit.testing import postgres_database
from microshop_orders.testing import Harness, Upstreams, run_harness

LIST = "/api/v1/admin/orders"
SUMMARY_FIELDS = {
    "id",
    "user_id",
    "status",
    "cancellation_pending",
    "total",
    "currency",
    "line_count",
    "created_at",
    "updated_at",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.infra)])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None (the SQLite file in data_dir) or a fresh PostgreSQL database, dropped after the test."""
    if request.param == "sqlite":
        yield None
        return
    async with postgres_database("orders") as url:
        yield url


@pytest.fixture
async def shop(tmp_path: Path, upstreams: tuple[Upstreams, str], database_url: str | None) -> AsyncIterator[Harness]:
    fake, url = upstreams
    async for harness in run_harness(tmp_path, url, fake, database_url=database_url):
        yield harness


async def _seed(shop: Harness, orders: list[tuple[str, str, int]]) -> list[str]:
    """Store finished orders as (user_id, status, line count), one second apart, oldest first; returns their ids.

    Written straight into the table: only the list is under test, and final statuses keep the saga away."""
    db: Database = shop.app.state.kit.database
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    async with db.transaction() as tx:
        for n, (user_id, status, line_count) in enumerate(orders):
            order_id, at = str(uuid.uuid4()), (start + timedelta(seconds=n)).isoformat()
            line = {"sku": "MUG-1", "name": "Mug", "quantity": 1, "unit_price": 1200, "currency": "EUR"}
            await tx.execute(
                "INSERT INTO orders (id, user_id, status, saga_step, lines, total, currency, shipping_address, "
                "payment_method_id, next_attempt_at, created_at, updated_at) VALUES (:id, :u, :s, 'done', :lines, "
                ":total, 'EUR', '{}', 'pm_good', :at, :at, :at)",
                {
                    "id": order_id,
                    "u": user_id,
                    "s": status,
                    "lines": json.dumps([{**line, "sku": f"SKU-{i}"} for i in range(line_count)]),
                    "total": 1200 * line_count,
                    "at": at,
                },
            )
            ids.append(order_id)
    return ids


async def test_admin_sees_every_customers_orders_newest_first(shop: Harness) -> None:
    ada, bob = shop.user, str(uuid.uuid4())
    placed = []
    for user, lines in ((ada, [("MUG-1", 2), ("TEA-1", 1)]), (bob, [("MUG-1", 1)]), (ada, [("MUG-1", 3)])):
        shop.user = user
        await shop.cart(*lines)
        response = await shop.order()
        assert response.status_code == 201, response.text
        placed.append(response.json())

    response = await shop.client.get(LIST, headers=shop.admin)

    assert response.status_code == 200, response.text
    page = response.json()
    assert (page["page"], page["limit"], page["total"]) == (1, 20, 3)
    items = page["items"]
    assert [item["id"] for item in items] == [order["id"] for order in reversed(placed)]
    assert [item["user_id"] for item in items] == [ada, bob, ada]
    assert all(set(item) == SUMMARY_FIELDS for item in items)
    first = items[-1]
    assert first["status"] == "CONFIRMED" and first["cancellation_pending"] is False
    assert (first["total"], first["currency"], first["line_count"]) == (2 * 1200 + 650, "EUR", 2)
    assert first["created_at"] == placed[0]["created_at"] and first["updated_at"] == placed[0]["updated_at"]
    shop.user = ada
    own = (await shop.client.get("/api/v1/orders", headers=shop.auth)).json()
    assert [o["id"] for o in own["items"]] == [placed[2]["id"], placed[0]["id"]], "a customer still sees only theirs"


async def test_the_status_filter_keeps_one_status_newest_first(shop: Harness) -> None:
    statuses = ["CONFIRMED", "SHIPPED", "DELIVERED", "SHIPPED", "CANCELLED", "SHIPPED", "REJECTED"]
    ids = await _seed(shop, [(f"user-{n % 3}", status, 1 + n % 2) for n, status in enumerate(statuses)])
    shipped = [order_id for order_id, status in zip(ids, statuses, strict=True) if status == "SHIPPED"]

    response = await shop.client.get(LIST, params={"status": "SHIPPED"}, headers=shop.admin)
    nothing = await shop.client.get(LIST, params={"status": "AWAITING_PAYMENT"}, headers=shop.admin)

    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == shipped[::-1]
    assert {item["status"] for item in response.json()["items"]} == {"SHIPPED"}
    assert response.json()["total"] == 3
    assert [item["line_count"] for item in response.json()["items"]] == [2, 2, 2]
    assert nothing.json() == {"items": [], "page": 1, "limit": 20, "total": 0}


async def test_pages_hold_at_most_the_limit_and_the_limit_is_capped_at_100(shop: Harness) -> None:
    ids = await _seed(shop, [(f"user-{n % 7}", "CONFIRMED", 1) for n in range(105)])

    first = await shop.client.get(LIST, params={"limit": 100}, headers=shop.admin)
    second = await shop.client.get(LIST, params={"limit": 100, "page": 2}, headers=shop.admin)
    beyond = await shop.client.get(LIST, params={"limit": 100, "page": 3}, headers=shop.admin)
    too_many = await shop.client.get(LIST, params={"limit": 101}, headers=shop.admin)

    assert [len(r.json()["items"]) for r in (first, second, beyond)] == [100, 5, 0]
    assert {r.json()["total"] for r in (first, second, beyond)} == {105}
    listed = [item["id"] for r in (first, second) for item in r.json()["items"]]
    assert listed == ids[::-1], "every order once, newest first, across the pages"
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["loc"] == ["query", "limit"]
    default = await shop.client.get(LIST, headers=shop.admin)
    assert len(default.json()["items"]) == 20


async def test_only_admins_may_list_every_order(shop: Harness) -> None:
    await _seed(shop, [(shop.user, "CONFIRMED", 1)])

    customer = await shop.client.get(LIST, headers=shop.auth)
    anonymous = await shop.client.get(LIST)

    assert customer.status_code == 403
    assert customer.headers["content-type"] == "application/problem+json"
    assert customer.json()["type"] == "/problems/forbidden"
    assert anonymous.status_code == 401


@pytest.mark.parametrize("status", ["PAID", "shipped", ""])
async def test_an_unknown_status_is_a_422_naming_the_field(shop: Harness, status: str) -> None:
    response = await shop.client.get(LIST, params={"status": status}, headers=shop.admin)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/validation"
    assert problem["errors"][0]["loc"] == ["query", "status"]
    assert "status" in problem["detail"]


async def test_the_list_is_in_the_openapi_document(shop: Harness) -> None:
    document = (await shop.client.get("/openapi.json")).json()
    operation = document["paths"][LIST]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}

    assert set(parameters) >= {"status", "page", "limit"}
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert {"200", "401", "403", "422"} <= set(operation["responses"])
    status_schema = document["components"]["schemas"]["Status"]
    assert set(status_schema["enum"]) == {
        "PENDING",
        "AWAITING_PAYMENT",
        "CONFIRMED",
        "REJECTED",
        "CANCELLED",
        "SHIPPED",
        "DELIVERED",
    }

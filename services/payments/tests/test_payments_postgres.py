"""The same payments flows on a real PostgreSQL: conditional moves, row locks, constraints, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microshop_kit.errors import IntegrityError
from microshop_kit.testing import JwtIssuer, postgres_database, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.testing import DECLINED, THREE_D_SECURE, Shop, new_order_id

pytestmark = pytest.mark.infra


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database for one test, dropped after it."""
    async with postgres_database("payments") as url:
        yield url


@pytest.fixture
async def pg_shop(postgres_url: str, issuer: tuple[JwtIssuer, str], tmp_path: Path) -> AsyncIterator[Shop]:
    settings = PaymentsSettings(data_dir=tmp_path, database_url=postgres_url, jwks_url=issuer[1], broker_url=None)
    app = create_app(settings)
    async with running_app(app) as client:
        yield Shop(app, client, issuer[0], tmp_path)


async def test_charge_replay_cancel_and_reconcile_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    card, declined = await shop.add_card("u1"), await shop.add_card("u1", DECLINED)
    order_id = new_order_id()

    first = await shop.charge("u1", card["id"], order_id=order_id, amount=1234)
    replay = await shop.charge("u1", card["id"], order_id=order_id, amount=1234)
    reused = await shop.charge("u1", card["id"], order_id=order_id, amount=999)
    refused = await shop.charge("u1", declined["id"])
    cancels = await asyncio.gather(*(shop.cancel(order_id) for _ in range(3)))
    tombstone = new_order_id()
    await shop.cancel(tombstone)
    late = await shop.charge("u1", card["id"], order_id=tombstone)

    assert first.status_code == 201 and first.json()["status"] == "succeeded" and replay.content == first.content
    assert reused.status_code == 422 and refused.status_code == 402 and refused.json()["code"] == "card_declined"
    assert {c.json()["status"] for c in cancels} == {"refunded"}
    assert late.status_code == 409 and late.json()["type"] == "/problems/payment-canceled"
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'refund'")) == 1
    assert [e["type"] for e in await shop.events()] == [
        "payment.captured.v1",
        "payment.failed.v1",
        "payment.refunded.v1",
    ]
    assert await shop.service.store.reconcile() == []


async def test_ten_concurrent_identical_charges_charge_once_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    card = await shop.add_card("u1")
    order_id = new_order_id()

    responses = await asyncio.gather(*(shop.charge("u1", card["id"], order_id=order_id) for _ in range(10)))

    assert {r.status_code for r in responses} == {201} and len({r.content for r in responses}) == 1
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1
    assert len(await shop.events("payment.captured.v1")) == 1


async def test_in_flight_duplicate_is_409_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    idempotency = shop.service.idempotency
    idempotency.settings = idempotency.settings.model_copy(update={"idempotency_wait_seconds": 0.1})
    card = await shop.add_card("u1")
    order_id = new_order_id()
    held = shop.hold("authorize")
    first = asyncio.create_task(shop.charge("u1", card["id"], order_id=order_id))
    await held.entered.wait()

    duplicate = await shop.charge("u1", card["id"], order_id=order_id)
    held.gate.set()

    assert duplicate.status_code == 409
    assert (await first).status_code == 201


async def test_approve_deny_and_concurrent_refunds_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    secure = await shop.add_card("u1", THREE_D_SECURE)
    approved = (await shop.charge("u1", secure["id"], amount=1000)).json()
    denied = (await shop.charge("u1", secure["id"], amount=500)).json()

    yes = await asyncio.gather(*(shop.act("u1", approved["id"], "approve") for _ in range(3)))
    no = await shop.act("u1", denied["id"], "deny")
    stranger = await shop.act("mallory", approved["id"], "approve")
    refunds = await asyncio.gather(*(shop.refund(approved["order_id"], 300, key=f"k{i}") for i in range(5)))

    assert {r.json()["status"] for r in yes} == {"succeeded"}
    assert no.json()["status"] == "canceled" and no.json()["code"] == "authentication_failed"
    assert stranger.status_code == 404
    assert sorted(r.status_code for r in refunds) == [201, 201, 201, 422, 422]
    assert (await shop.payment(approved["order_id"])).json()["amount_refunded"] == 900
    assert len(await shop.events("payment.captured.v1")) == 1 and len(await shop.events("payment.failed.v1")) == 1
    assert await shop.service.store.reconcile() == []


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
        "VALUES ('x', :p, 'capture', 1, 'EUR', 'now')",
        "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
        "VALUES ('x', :p, 'refund', -1, 'EUR', 'now')",
        "UPDATE payments SET amount_refunded = amount + 1 WHERE id = :p",
        "UPDATE payments SET status = 'captured' WHERE id = :p",
    ],
)
async def test_the_schema_refuses_what_the_invariants_forbid_on_postgres(pg_shop: Shop, sql: str) -> None:
    shop = pg_shop
    card = await shop.add_card("u1")
    payment = (await shop.charge("u1", card["id"])).json()

    with pytest.raises(IntegrityError):
        async with shop.service.db.transaction() as tx:
            await tx.execute(sql, {"p": payment["id"]})

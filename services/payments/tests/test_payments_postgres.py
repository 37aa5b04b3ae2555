"""The same payments flows on a real PostgreSQL: migrations, conditional moves, constraints, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microshop_kit.errors import IntegrityError
from microshop_kit.testing import JwtIssuer, postgres_database, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.testing import DECLINED, Shop

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
    order_id = str(uuid.uuid4())

    first = await shop.charge("u1", card["id"], order_id=order_id, amount=1234)
    replay = await shop.charge("u1", card["id"], order_id=order_id, amount=1234)
    reused = await shop.charge("u1", card["id"], order_id=order_id, amount=999)
    refused = await shop.charge("u1", declined["id"])
    cancels = await asyncio.gather(*(shop.cancel(order_id) for _ in range(3)))
    tombstone = str(uuid.uuid4())
    await shop.cancel(tombstone)
    late = await shop.charge("u1", card["id"], order_id=tombstone)

    assert first.status_code == 201 and replay.content == first.content
    assert reused.status_code == 422 and refused.status_code == 402
    assert {c.json()["status"] for c in cancels} == {"refunded"}
    assert late.status_code == 409 and late.json()["type"] == "/problems/payment-canceled"
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'refund'")) == 1
    assert await shop.service.store.reconcile() == []


async def test_in_flight_duplicate_is_409_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    card = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    held = shop.hold("authorize")
    first = asyncio.create_task(shop.charge("u1", card["id"], order_id=order_id))
    await held.entered.wait()

    duplicate = await shop.charge("u1", card["id"], order_id=order_id)
    held.gate.set()

    assert duplicate.status_code == 409
    assert (await first).status_code == 201


async def test_the_ledger_refuses_a_second_entry_of_a_kind_on_postgres(pg_shop: Shop) -> None:
    shop = pg_shop
    card = await shop.add_card("u1")
    payment = (await shop.charge("u1", card["id"])).json()

    with pytest.raises(IntegrityError):
        async with shop.service.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
                "VALUES ('x', :p, 'capture', 1, 'EUR', 'now')",
                {"p": payment["id"]},
            )

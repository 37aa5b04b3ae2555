"""The intents migration (0002) carries payments of the first schema over, on SQLite and PostgreSQL: each old
state maps to its intent state and the ledger still reconciles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from microshop_kit import db as dbmod
from microshop_kit.testing import postgres_database
from microshop_payments.app import MIGRATIONS
from microshop_payments.store import PaymentStore

_OLD_PAYMENTS = [  # (id, status, amount, decline_code, ledger kinds) as the first schema kept them
    ("p_captured", "captured", 100, None, ["authorization", "capture"]),
    ("p_refunded", "refunded", 200, None, ["authorization", "capture", "refund"]),
    ("p_voided", "voided", 300, None, ["authorization", "void"]),
    ("p_declined", "declined", 400, "card_declined", []),
    ("p_tombstone", "canceled", 0, None, []),
    ("p_held", "requires_capture", 500, None, ["authorization"]),
]
_SIGN = {"authorization": 1, "capture": 1, "void": -1, "refund": -1}


async def _migrate_old_rows(url: str, tmp_path: Path) -> list[dict[str, object]]:
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(MIGRATIONS / "0001_init.sql", first)
    database = await dbmod.connect(url)
    try:
        await database.migrate("payments", first)
        async with database.transaction() as tx:
            for pid, status, amount, code, kinds in _OLD_PAYMENTS:
                await tx.execute(
                    "INSERT INTO payments (id, order_id, amount, currency, status, decline_code, created_at, "
                    "updated_at) VALUES (:id, :o, :a, 'EUR', :s, :c, 'then', 'then')",
                    {"id": pid, "o": f"o_{pid}", "a": amount, "s": status, "c": code},
                )
                for kind in kinds:
                    await tx.execute(
                        "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
                        "VALUES (:id, :p, :k, :a, 'EUR', 'then')",
                        {"id": f"{pid}_{kind}", "p": pid, "k": kind, "a": _SIGN[kind] * amount},
                    )
        assert await database.migrate("payments", MIGRATIONS) == ["payments:intents"]
        assert await PaymentStore(database).reconcile() == []
        rows = await database.fetch("SELECT id, status, amount_refunded, code FROM payments ORDER BY id")
        return [dict(row) for row in rows]
    finally:
        await database.close()


_MIGRATED = [
    {"id": "p_captured", "status": "succeeded", "amount_refunded": 0, "code": None},
    {"id": "p_declined", "status": "canceled", "amount_refunded": 0, "code": "card_declined"},
    {"id": "p_held", "status": "requires_capture", "amount_refunded": 0, "code": None},
    {"id": "p_refunded", "status": "succeeded", "amount_refunded": 200, "code": None},
    {"id": "p_tombstone", "status": "canceled", "amount_refunded": 0, "code": None},
    {"id": "p_voided", "status": "canceled", "amount_refunded": 0, "code": None},
]


@pytest.mark.infra
async def test_the_intents_migration_carries_old_payments_over_on_postgres(tmp_path: Path) -> None:
    async with postgres_database("payments") as url:
        assert await _migrate_old_rows(url, tmp_path) == _MIGRATED


async def test_the_intents_migration_carries_old_payments_over_on_sqlite(tmp_path: Path) -> None:
    assert await _migrate_old_rows(f"sqlite:///{tmp_path / 'old.db'}", tmp_path) == _MIGRATED

"""SQL of the payments service: payment methods, payments, ledger entries and idempotency records."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from microshop_kit.db import Database, Row, Tx
from microshop_payments.domain import Balances, EntryKind, Status, balances, expected_balances, signed


def now() -> str:
    return datetime.now(UTC).isoformat()


def new_id(prefix: str) -> str:
    """An opaque id; base64url keeps long runs of digits (which could pass for a card number) out of ids."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer a request with an idempotency key got, kept to be replayed as is."""

    status_code: int
    body: dict[str, Any]
    #: True when this is a stored answer given again, not a new one.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A payment whose ledger does not sum to what its state requires."""

    payment_id: str
    status: str
    expected: Balances
    actual: Balances


_PAYMENT_COLUMNS = (
    "id, order_id, user_id, payment_method_id, amount, currency, status, authorization_id, decline_code, "
    "created_at, updated_at"
)


class PaymentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------------------------- methods

    async def add_method(self, tx: Tx, method: dict[str, Any]) -> None:
        await tx.execute(
            "INSERT INTO payment_methods (id, user_id, type, brand, last4, exp_month, exp_year, email, "
            "provider_ref, created_at) VALUES (:id, :user_id, :type, :brand, :last4, :exp_month, :exp_year, "
            ":email, :provider_ref, :created_at)",
            method,
        )

    async def method_of(self, method_id: str, user_id: str) -> Row | None:
        return await self.db.fetchrow(
            "SELECT id, type, provider_ref FROM payment_methods WHERE id = :id AND user_id = :user_id",
            {"id": method_id, "user_id": user_id},
        )

    # --------------------------------------------------------------------------------------- idempotency

    async def claim_key(self, tx: Tx, key: str, request_hash: str, at: str) -> Row | None:
        """Insert the key as in flight; None when this call did, else the existing record (locked)."""
        inserted = await tx.fetchval(
            "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
            "VALUES (:key, :hash, 'in_flight', :at, :at) ON CONFLICT (key) DO NOTHING RETURNING key",
            {"key": key, "hash": request_hash, "at": at},
        )
        if inserted is not None:
            return None
        return await tx.fetchrow(
            "SELECT key, request_hash, state, status_code, response_body, locked_at FROM idempotency "
            f"WHERE key = :key{tx.for_update}",
            {"key": key},
        )

    async def relock_key(self, tx: Tx, key: str, at: str) -> None:
        await tx.execute("UPDATE idempotency SET locked_at = :at WHERE key = :key", {"key": key, "at": at})

    async def finish_key(self, key: str, answer: StoredAnswer) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE idempotency SET state = 'done', status_code = :status, response_body = :body WHERE key = :key",
                {"key": key, "status": answer.status_code, "body": json.dumps(answer.body)},
            )

    async def release_key(self, key: str) -> None:
        """Forget an in-flight key whose request failed before it had an answer, so a retry can run it."""
        await self.db.execute("DELETE FROM idempotency WHERE key = :key AND state = 'in_flight'", {"key": key})

    async def prune_keys(self, created_before: str) -> int:
        return await self.db.execute(
            "DELETE FROM idempotency WHERE state = 'done' AND created_at < :before",
            {"before": created_before},
        )

    # ------------------------------------------------------------------------------------------ payments

    async def payment_by_order(self, order_id: str) -> Row | None:
        return await self.db.fetchrow(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE order_id = :order_id", {"order_id": order_id}
        )

    async def insert_payment(self, tx: Tx, payment: dict[str, Any]) -> bool:
        """Insert the order's payment; False when the order already has one (a charge or a tombstone)."""
        at = now()
        inserted = await tx.fetchval(
            f"INSERT INTO payments ({_PAYMENT_COLUMNS}) VALUES (:id, :order_id, :user_id, "
            ":payment_method_id, :amount, :currency, :status, :authorization_id, :decline_code, :at, :at) "
            "ON CONFLICT (order_id) DO NOTHING RETURNING id",
            {**payment, "at": at},
        )
        return inserted is not None

    async def insert_tombstone(self, tx: Tx, order_id: str) -> bool:
        tombstone = {
            "id": new_id("pay"),
            "order_id": order_id,
            "user_id": None,
            "payment_method_id": None,
            "amount": 0,
            "currency": None,
            "status": Status.CANCELED.value,
            "authorization_id": None,
            "decline_code": None,
        }
        return await self.insert_payment(tx, tombstone)

    async def transition(self, tx: Tx, payment_id: str, source: Status, target: Status) -> bool:
        """Move a payment from one state to another; False when it was no longer in ``source``."""
        changed = await tx.execute(
            "UPDATE payments SET status = :target, updated_at = :at WHERE id = :id AND status = :source",
            {"id": payment_id, "source": source.value, "target": target.value, "at": now()},
        )
        return changed == 1

    # -------------------------------------------------------------------------------------------- ledger

    async def add_entry(self, tx: Tx, payment: Row, kind: EntryKind) -> None:
        """Record a money movement of the payment's amount; at most one per kind (a repeat does nothing)."""
        await tx.execute(
            "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
            "VALUES (:id, :payment_id, :kind, :amount, :currency, :at) "
            "ON CONFLICT (payment_id, kind) DO NOTHING",
            {
                "id": new_id("le"),
                "payment_id": payment["id"],
                "kind": kind.value,
                "amount": signed(kind, payment["amount"]),
                "currency": payment["currency"],
                "at": now(),
            },
        )

    async def ledger(self, payment_id: str) -> list[Row]:
        return await self.db.fetch(
            "SELECT kind, amount, currency, created_at FROM ledger_entries WHERE payment_id = :id ORDER BY kind",
            {"id": payment_id},
        )

    async def reconcile(self) -> list[Mismatch]:
        """Every payment whose ledger does not sum to what its state requires (empty when all reconcile)."""
        rows = await self.db.fetch(
            "SELECT p.id, p.status, p.amount, e.kind, e.amount AS entry FROM payments p "
            "LEFT JOIN ledger_entries e ON e.payment_id = p.id ORDER BY p.id"
        )
        grouped: dict[str, tuple[Row, list[tuple[EntryKind, int]]]] = {}
        for row in rows:
            _, entries = grouped.setdefault(row["id"], (row, []))
            if row["kind"] is not None:
                entries.append((EntryKind(row["kind"]), int(row["entry"])))
        mismatches = []
        for payment_id, (row, entries) in grouped.items():
            expected = expected_balances(Status(row["status"]), int(row["amount"]))
            actual = balances(entries)
            if expected != actual:
                mismatches.append(Mismatch(payment_id, row["status"], expected, actual))
        return mismatches

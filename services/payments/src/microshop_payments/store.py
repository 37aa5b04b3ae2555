"""SQL of the payments service: payment methods, payments, refunds, ledger entries and idempotency records."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
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
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A payment whose ledger (or refund total) does not sum to what its state requires."""

    payment_id: str
    status: str
    expected: Balances
    actual: Balances
    #: Refunds that succeeded, against the payment's ``amount_refunded`` (equal unless something is wrong).
    refunds: tuple[int, int] = (0, 0)


#: A payment with what its method shows (type, brand, last 4), for answers and events.
_PAYMENT_SELECT = (
    "SELECT p.id, p.order_id, p.user_id, p.payment_method_id, p.amount, p.amount_refunded, p.currency, p.status, "
    "p.authorization_id, p.code, p.decision, p.created_at, p.updated_at, "
    "m.type AS method_type, m.brand AS method_brand, m.last4 AS method_last4 "
    "FROM payments p LEFT JOIN payment_methods m ON m.id = p.payment_method_id"
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
        return await self.db.fetchrow(f"{_PAYMENT_SELECT} WHERE p.order_id = :order_id", {"order_id": order_id})

    async def payment_of_user(self, payment_id: str, user_id: str) -> Row | None:
        return await self.db.fetchrow(
            f"{_PAYMENT_SELECT} WHERE p.id = :id AND p.user_id = :user_id", {"id": payment_id, "user_id": user_id}
        )

    async def payments_waiting_since(self, before: str, limit: int = 100) -> list[Row]:
        """Payments waiting for the customer's action since before ``before`` (oldest first)."""
        return await self.db.fetch(
            f"{_PAYMENT_SELECT} WHERE p.status = :status AND p.updated_at < :before ORDER BY p.updated_at LIMIT :limit",
            {"status": Status.REQUIRES_ACTION.value, "before": before, "limit": limit},
        )

    async def insert_payment(self, tx: Tx, payment: dict[str, Any]) -> bool:
        """Insert the order's payment; False when the order already has one (a charge or a tombstone)."""
        at = now()
        inserted = await tx.fetchval(
            "INSERT INTO payments (id, order_id, user_id, payment_method_id, amount, currency, status, "
            "authorization_id, code, created_at, updated_at) VALUES (:id, :order_id, :user_id, "
            ":payment_method_id, :amount, :currency, :status, :authorization_id, :code, :at, :at) "
            "ON CONFLICT (order_id) DO NOTHING RETURNING id",
            {"authorization_id": None, "code": None, **payment, "at": at},
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
        }
        return await self.insert_payment(tx, tombstone)

    async def transition(self, tx: Tx, payment_id: str, source: Status, target: Status, **columns: str | None) -> bool:
        """Move a payment from ``source`` to ``target`` (setting ``columns`` too: ``authorization_id``,
        ``code``, ``decision``); False when it was no longer in ``source``."""
        assignments = "".join(f", {name} = :{name}" for name in columns)
        changed = await tx.execute(
            f"UPDATE payments SET status = :target, updated_at = :at{assignments} WHERE id = :id AND status = :source",
            {**columns, "id": payment_id, "source": source.value, "target": target.value, "at": now()},
        )
        return changed == 1

    # ------------------------------------------------------------------------------------------- refunds

    async def lock_payment(self, tx: Tx, payment_id: str) -> Row | None:
        return await tx.fetchrow(
            f"SELECT id, status, amount, amount_refunded FROM payments WHERE id = :id{tx.for_update}",
            {"id": payment_id},
        )

    async def refund_by_key(self, tx: Tx, payment_id: str, key: str) -> Row | None:
        return await tx.fetchrow(
            "SELECT id, payment_id, key, amount, status FROM refunds WHERE payment_id = :p AND key = :key",
            {"p": payment_id, "key": key},
        )

    async def pending_refunds(self, payment_id: str) -> list[Row]:
        return await self.db.fetch(
            "SELECT id, payment_id, key, amount, status FROM refunds WHERE payment_id = :p AND status = 'pending' "
            "ORDER BY created_at",
            {"p": payment_id},
        )

    async def pending_refund_total(self, tx: Tx, payment_id: str) -> int:
        total = await tx.fetchval(
            "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = :p AND status = 'pending'",
            {"p": payment_id},
        )
        return int(total)

    async def insert_refund(self, tx: Tx, refund: dict[str, Any]) -> None:
        await tx.execute(
            "INSERT INTO refunds (id, payment_id, key, amount, status, created_at) "
            "VALUES (:id, :payment_id, :key, :amount, 'pending', :at)",
            {**refund, "at": now()},
        )

    async def complete_refund(self, tx: Tx, refund: Row) -> bool:
        """Mark a pending refund succeeded and count it on the payment; False when it already was."""
        moved = await tx.execute(
            "UPDATE refunds SET status = 'succeeded' WHERE id = :id AND status = 'pending'", {"id": refund["id"]}
        )
        if moved != 1:
            return False
        counted = await tx.execute(
            "UPDATE payments SET amount_refunded = amount_refunded + :amount, updated_at = :at "
            "WHERE id = :p AND status = :succeeded AND amount_refunded + :amount <= amount",
            {"p": refund["payment_id"], "amount": refund["amount"], "succeeded": Status.SUCCEEDED.value, "at": now()},
        )
        if counted != 1:  # the reservation made this impossible; refuse rather than over-refund on paper
            raise RuntimeError(f"refund {refund['id']} does not fit in payment {refund['payment_id']}")
        return True

    # -------------------------------------------------------------------------------------------- ledger

    async def add_entry(self, tx: Tx, payment: Row, kind: EntryKind) -> None:
        """Record a hold or capture movement of the payment's amount; at most one per kind (a repeat does
        nothing). Refunds go through ``add_refund_entry``."""
        await tx.execute(
            "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
            "VALUES (:id, :payment_id, :kind, :amount, :currency, :at) "
            "ON CONFLICT (payment_id, kind) WHERE kind <> 'refund' DO NOTHING",
            {
                "id": new_id("le"),
                "payment_id": payment["id"],
                "kind": kind.value,
                "amount": signed(kind, payment["amount"]),
                "currency": payment["currency"],
                "at": now(),
            },
        )

    async def add_refund_entry(self, tx: Tx, refund: Row, currency: str) -> None:
        await tx.execute(
            "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, refund_id, created_at) "
            "VALUES (:id, :payment_id, 'refund', :amount, :currency, :refund_id, :at)",
            {
                "id": new_id("le"),
                "payment_id": refund["payment_id"],
                "amount": signed(EntryKind.REFUND, refund["amount"]),
                "currency": currency,
                "refund_id": refund["id"],
                "at": now(),
            },
        )

    async def ledger(self, payment_id: str) -> list[Row]:
        return await self.db.fetch(
            "SELECT kind, amount, currency, refund_id, created_at FROM ledger_entries WHERE payment_id = :id "
            "ORDER BY created_at, kind",
            {"id": payment_id},
        )

    async def reconcile(self) -> list[Mismatch]:
        """Every payment whose ledger does not sum to what its state requires, or whose ``amount_refunded``
        is not the sum of its succeeded refunds (empty when all reconcile)."""
        rows = await self.db.fetch(
            "SELECT p.id, p.status, p.amount, p.amount_refunded, e.kind, e.amount AS entry, "
            "(SELECT COALESCE(SUM(r.amount), 0) FROM refunds r WHERE r.payment_id = p.id AND r.status = 'succeeded')"
            " AS refunds FROM payments p LEFT JOIN ledger_entries e ON e.payment_id = p.id ORDER BY p.id"
        )
        grouped: dict[str, tuple[Row, list[tuple[EntryKind, int]]]] = {}
        for row in rows:
            _, entries = grouped.setdefault(row["id"], (row, []))
            if row["kind"] is not None:
                entries.append((EntryKind(row["kind"]), int(row["entry"])))
        mismatches = []
        for payment_id, (row, entries) in grouped.items():
            refunded, refunds = int(row["amount_refunded"]), int(row["refunds"])
            expected = expected_balances(Status(row["status"]), int(row["amount"]), refunded)
            actual = balances(entries)
            if expected != actual or refunded != refunds:
                mismatches.append(Mismatch(payment_id, row["status"], expected, actual, (refunds, refunded)))
        return mismatches

"""Orders' tables: carts, orders with their saga state, the timeline and idempotency keys."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from microshop_kit.db import Database, Row, Tx
from microshop_orders.domain import Line, Status, Step, can_cancel


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def lines_from_json(text: str) -> list[Line]:
    return [Line(**item) for item in json.loads(text)]


class CartStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lines(self, user_id: str) -> list[Row]:
        return await self.db.fetch(
            "SELECT sku, quantity, unit_price, currency FROM cart_lines WHERE user_id = :u ORDER BY added_at, sku",
            {"u": user_id},
        )

    async def replace(self, user_id: str, lines: list[Line]) -> list[Row]:
        """Make the cart exactly ``lines``; returns them as ``lines()`` would read them back."""
        rows = [
            {
                "user_id": user_id,
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "currency": line.currency,
                "added_at": iso(now()),
            }
            for line in lines
        ]
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM cart_lines WHERE user_id = :u", {"u": user_id})
            for row in rows:
                await tx.execute(
                    "INSERT INTO cart_lines (user_id, sku, quantity, unit_price, currency, added_at) "
                    "VALUES (:user_id, :sku, :quantity, :unit_price, :currency, :added_at)",
                    row,
                )
        return sorted(rows, key=lambda row: (row["added_at"], row["sku"]))

    async def reprice(self, user_id: str, prices: dict[str, int]) -> None:
        """Record the prices the customer has now been shown."""
        async with self.db.transaction() as tx:
            for sku, price in prices.items():
                await tx.execute(
                    "UPDATE cart_lines SET unit_price = :p WHERE user_id = :u AND sku = :sku",
                    {"p": price, "u": user_id, "sku": sku},
                )

    async def clear(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM cart_lines WHERE user_id = :u", {"u": user_id})


_ORDER_COLUMNS = (
    "id, user_id, status, reason, saga_step, compensating, lines, total, currency, shipping_address, "
    "payment_method_id, payment_id, email, customer_name, attempts, next_attempt_at, created_at, updated_at"
)
_MORE_COLUMNS = ", next_action, action_deadline, payment_outcome, cancel_requested, refunded, carrier, tracking_number"
#: An order some runner must still drive: a saga in progress, or a cancellation not finished yet.
_UNFINISHED = "(status IN ('PENDING', 'AWAITING_PAYMENT') OR cancel_requested = 1)"


class OrderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ----------------------------------------------------------------------------------------- idempotency

    async def idempotency(self, user_id: str, key: str, tx: Tx | None = None) -> Row | None:
        return await (tx or self.db).fetchrow(
            "SELECT request_hash, order_id, state, status_code, response_body FROM idempotency_keys "
            "WHERE user_id = :u AND key = :k",
            {"u": user_id, "k": key},
        )

    async def create(
        self,
        *,
        order_id: str,
        user_id: str,
        key: str,
        request_hash: str,
        lines: list[Line],
        total: int,
        currency: str,
        address: dict[str, str],
        payment_method_id: str,
        owner: str,
        lease_seconds: float,
    ) -> None:
        """The PENDING order and its in-flight idempotency key, in one transaction (IntegrityError on a
        concurrent duplicate key). The order starts leased to ``owner``, the runner the request starts at once,
        which thus needs no claim of its own."""
        moment = now()
        at = iso(moment)
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, state, created_at) "
                "VALUES (:u, :k, :h, :o, 'in_flight', :at)",
                {"u": user_id, "k": key, "h": request_hash, "o": order_id, "at": at},
            )
            await tx.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}, lease_owner, lease_until) VALUES (:id, :u, 'PENDING', NULL, "
                ":step, 0, :lines, :total, :cur, :addr, :pm, NULL, NULL, NULL, 0, :at, :at, :at, :owner, :until)",
                {
                    "id": order_id,
                    "u": user_id,
                    "step": Step.STARTED.value,
                    "lines": json.dumps([asdict(line) for line in lines]),
                    "total": total,
                    "cur": currency,
                    "addr": json.dumps(address),
                    "pm": payment_method_id,
                    "at": at,
                    "owner": owner,
                    "until": iso(moment + timedelta(seconds=lease_seconds)),
                },
            )
            await self.add_timeline(tx, order_id, "PENDING", "Order received")

    @staticmethod
    async def finish_idempotency(tx: Tx, user_id: str, order_id: str, status_code: int, body: dict[str, Any]) -> None:
        """Store the answer the key replays, unless one is stored already (the first answer stays)."""
        # Found by its order (index idempotency_keys_by_order, one row); user_id only guards.
        await tx.execute(
            "UPDATE idempotency_keys SET state = 'done', status_code = :s, response_body = :b "
            "WHERE user_id = :u AND order_id = :o AND state = 'in_flight'",
            {"s": status_code, "b": json.dumps(body), "u": user_id, "o": order_id},
        )

    async def prune_keys(self, created_before: datetime) -> int:
        """Forget finished keys created before ``created_before`` (their orders stay); in-flight ones stay."""
        return await self.db.execute(
            "DELETE FROM idempotency_keys WHERE state = 'done' AND created_at < :before",
            {"before": iso(created_before)},
        )

    # ---------------------------------------------------------------------------------------------- orders

    async def get(self, order_id: str, tx: Tx | None = None) -> Row | None:
        """The order as committed, or as ``tx`` sees it."""
        return await (tx or self.db).fetchrow(
            f"SELECT {_ORDER_COLUMNS}{_MORE_COLUMNS} FROM orders WHERE id = :id", {"id": order_id}
        )

    async def newest_first(
        self, *, limit: int, offset: int, user_id: str | None = None, status: Status | None = None
    ) -> tuple[list[Row], int]:
        """One page of orders, newest first, and how many there are: a customer's (``user_id``), those in one
        ``status``, or every order (an admin's list). Indexes: orders_by_user, orders_by_status, orders_newest."""
        filters = {"user_id": user_id, "status": status.value if status else None}
        params: dict[str, Any] = {name: value for name, value in filters.items() if value is not None}
        where = " AND ".join(f"{name} = :{name}" for name in params)
        where = f" WHERE {where}" if where else ""
        rows = await self.db.fetch(
            f"SELECT {_ORDER_COLUMNS}{_MORE_COLUMNS} FROM orders{where} ORDER BY created_at DESC, id "
            "LIMIT :limit OFFSET :offset",
            {**params, "limit": limit, "offset": offset},
        )
        total = await self.db.fetchval(f"SELECT count(*) FROM orders{where}", params)
        return rows, int(total)

    async def timeline(self, order_id: str, tx: Tx | None = None) -> list[Row]:
        return await (tx or self.db).fetch(
            "SELECT at, status, note FROM order_timeline WHERE order_id = :o ORDER BY at", {"o": order_id}
        )

    @staticmethod
    async def add_timeline(tx: Tx, order_id: str, status: str, note: str | None) -> None:
        await tx.execute(
            "INSERT INTO order_timeline (order_id, at, status, note) VALUES (:o, :at, :s, :n)",
            {"o": order_id, "at": iso(now()), "s": status, "n": note},
        )

    async def due(self, limit: int = 20) -> list[str]:
        rows = await self.db.fetch(
            f"SELECT id FROM orders WHERE {_UNFINISHED} AND next_attempt_at <= :now "
            "ORDER BY next_attempt_at LIMIT :limit",
            {"now": iso(now()), "limit": limit},
        )
        return [row["id"] for row in rows]

    # ----------------------------------------------------------------------------------------------- saga

    async def claim(self, order_id: str, owner: str, lease_seconds: float) -> bool:
        """Take the order's lease so only one runner (request, recovery loop, other instance) drives it."""
        moment = now()
        changed = await self.db.execute(
            f"UPDATE orders SET lease_owner = :owner, lease_until = :until WHERE id = :id AND {_UNFINISHED} "
            "AND (lease_until IS NULL OR lease_until < :now)",
            {
                "owner": owner,
                "until": iso(moment + timedelta(seconds=lease_seconds)),
                "id": order_id,
                "now": iso(moment),
            },
        )
        return changed == 1

    async def release(self, order_id: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE orders SET lease_owner = NULL, lease_until = NULL WHERE id = :id AND lease_owner = :owner",
            {"id": order_id, "owner": owner},
        )

    async def advance(self, order_id: str, step: Step, *, note: str | None = None, **fields: Any) -> Row | None:
        """Persist the step reached (and what it learnt) before the saga takes the next one; a ``status`` among
        the fields is also written to the timeline with ``note``. Returns the order as written."""
        sets = ", ".join(f"{name} = :{name}" for name in fields)
        update = (
            f"UPDATE orders SET saga_step = :step, attempts = 0, updated_at = :at{', ' + sets if sets else ''} "
            f"WHERE id = :id RETURNING {_ORDER_COLUMNS}{_MORE_COLUMNS}"
        )
        values = {"step": step.value, "at": iso(now()), "id": order_id, **fields}
        if "status" not in fields:
            # One statement (the usual step): on PostgreSQL one round trip instead of BEGIN, UPDATE, COMMIT.
            return await self.db.write_row(update, values)
        tx: Tx
        async with self.db.transaction() as tx:
            order = await tx.fetchrow(update, values)
            await self.add_timeline(tx, order_id, fields["status"], note)
        return order

    async def await_payment_action(
        self, order_id: str, *, payment_id: str | None, next_action: dict[str, Any], deadline: datetime
    ) -> Row | None:
        """The payment waits for the customer: AWAITING_PAYMENT with what they must do, until ``deadline``.
        Returns the order as it is now."""
        tx: Tx
        async with self.db.transaction() as tx:
            order = await tx.fetchrow(
                "UPDATE orders SET status = 'AWAITING_PAYMENT', saga_step = :step, attempts = 0, payment_id = :p, "
                "next_action = :a, action_deadline = :d, updated_at = :at WHERE id = :id AND status = 'PENDING' "
                f"RETURNING {_ORDER_COLUMNS}{_MORE_COLUMNS}",
                {
                    "step": Step.PAYMENT_ACTION.value,
                    "p": payment_id,
                    "a": json.dumps(next_action),
                    "d": iso(deadline),
                    "at": iso(now()),
                    "id": order_id,
                },
            )
            if order is None:  # no longer PENDING: the saga goes on from what the order says
                return await self.get(order_id, tx)
            await self.add_timeline(tx, order_id, "AWAITING_PAYMENT", "Waiting for you to approve the payment")
        return order

    @staticmethod
    async def record_payment_outcome(tx: Tx, order_id: str, outcome: str) -> str | None:
        """Note what payments announced (``captured`` or ``failed:<code>``) and make the order due now. Returns
        the order's status when noted; None when the order is final already or knew the outcome."""
        row = await tx.fetchrow(
            "UPDATE orders SET payment_outcome = :o, next_attempt_at = :at "
            "WHERE id = :id AND status IN ('PENDING', 'AWAITING_PAYMENT') AND payment_outcome IS NULL "
            "RETURNING status",
            {"o": outcome, "at": iso(now()), "id": order_id},
        )
        return None if row is None else str(row["status"])

    async def request_cancel(self, order_id: str, user_id: str, reason: str) -> tuple[Row | None, bool]:
        """Mark the customer's order for cancellation when it may still be cancelled. Returns the order's status
        row as it was (None: no such order of this user) and whether the cancellation was accepted."""
        async with self.db.transaction() as tx:
            order = await tx.fetchrow(
                f"SELECT status, cancel_requested FROM orders WHERE id = :id AND user_id = :u{tx.for_update}",
                {"id": order_id, "u": user_id},
            )
            if order is None or not can_cancel(Status(order["status"]), bool(order["cancel_requested"])):
                return order, False
            compensate = order["status"] == "AWAITING_PAYMENT"
            await tx.execute(
                "UPDATE orders SET cancel_requested = 1, compensating = CASE WHEN :c = 1 THEN 1 ELSE compensating END, "
                "reason = :r, next_attempt_at = :at, attempts = 0, updated_at = :at WHERE id = :id",
                {"c": int(compensate), "r": reason, "at": iso(now()), "id": order_id},
            )
            await self.add_timeline(tx, order_id, "CANCELLATION_REQUESTED", reason)
            return order, True

    async def move(self, tx: Tx, order_id: str, *, to: Status, source: Status, note: str, **fields: Any) -> bool:
        """Move an order from ``source`` to ``to`` (an admin's shipped/delivered), with its timeline entry."""
        sets = "".join(f", {name} = :{name}" for name in fields)
        changed = await tx.execute(
            f"UPDATE orders SET status = :to, updated_at = :at{sets} "
            "WHERE id = :id AND status = :source AND cancel_requested = 0",
            {"to": to.value, "source": source.value, "at": iso(now()), "id": order_id, **fields},
        )
        if changed != 1:
            return False
        await self.add_timeline(tx, order_id, to.value, note)
        return True

    async def start_compensation(self, order_id: str, reason: str) -> Row | None:
        """Turn the saga to compensation with the reason the customer will read; returns the order as written."""
        tx: Tx
        async with self.db.transaction() as tx:
            return await tx.fetchrow(
                "UPDATE orders SET compensating = 1, reason = :r, updated_at = :at WHERE id = :id "
                f"RETURNING {_ORDER_COLUMNS}{_MORE_COLUMNS}",
                {"r": reason, "at": iso(now()), "id": order_id},
            )

    async def postpone(self, order_id: str, delay_seconds: float, error: str, *, count: bool = True) -> None:
        """Leave the order for the recovery loop after ``delay_seconds``; ``count``: a failed attempt (backoff)."""
        await self.db.execute(
            f"UPDATE orders SET attempts = attempts + {1 if count else 0}, next_attempt_at = :next, "
            "lease_owner = NULL, lease_until = NULL WHERE id = :id",
            {"next": iso(now() + timedelta(seconds=delay_seconds)), "id": order_id},
        )

    async def finish(
        self, tx: Tx, order_id: str, status: Status, reason: str | None, note: str, *, refunded: int = 0
    ) -> Row:
        """Make the order final, with its timeline entry; returns the order as written."""
        order = await tx.fetchrow(
            "UPDATE orders SET status = :s, reason = :r, saga_step = :step, updated_at = :at, next_action = NULL, "
            "cancel_requested = 0, refunded = :refunded, lease_owner = NULL, lease_until = NULL WHERE id = :id "
            f"RETURNING {_ORDER_COLUMNS}{_MORE_COLUMNS}",
            {
                "s": status.value,
                "r": reason,
                "step": Step.DONE.value,
                "at": iso(now()),
                "id": order_id,
                "refunded": refunded,
            },
        )
        if order is None:
            raise LookupError(f"order {order_id!r} does not exist")
        await self.add_timeline(tx, order_id, status.value, note)
        return order

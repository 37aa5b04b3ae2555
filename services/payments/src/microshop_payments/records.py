"""The payment's state moves as single transactions: the conditional state change, its ledger rows and its event.

Each ``record_*`` moves the payment only if it is still in the state it was read in, and writes the ledger
entry and the outbox event in the same transaction, so a move, its money and its event happen together or
not at all. Each answers whether it moved the payment (False: something else moved it first).
"""

from __future__ import annotations

from typing import Any

from microshop_contracts import PaymentCaptured, PaymentFailed, PaymentRefunded
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Row
from microshop_kit.log import get_logger
from microshop_payments.domain import Decision, EntryKind, Status
from microshop_payments.store import PaymentStore

log = get_logger("microshop.payments")


def moved(payment: Row, **changes: Any) -> dict[str, Any]:
    """A copy of ``payment`` with the columns a move changed."""
    return {**payment, **changes}


class Recorder:
    def __init__(self, db: Database, store: PaymentStore, outbox: Outbox) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox

    async def authorization(
        self, payment: Row, source: Status, target: Status, authorization_id: str, decision: Decision | None = None
    ) -> bool:
        """The provider authorized (``target`` requires_capture: the money is held) or opened a customer step
        (``target`` requires_action)."""
        columns = {"authorization_id": authorization_id}
        if decision is not None:
            columns["decision"] = decision.value
        async with self.db.transaction() as tx:
            done = await self.store.transition(tx, payment["id"], source, target, **columns)
            if done and target is Status.REQUIRES_CAPTURE:
                await self.store.add_entry(tx, payment, EntryKind.AUTHORIZATION)
        if done:
            what = "payment authorized" if target is Status.REQUIRES_CAPTURE else "payment waits for the customer"
            log.info(what, order_id=payment["order_id"], payment_id=payment["id"])
        return done

    async def capture(self, payment: Row) -> bool:
        event = PaymentCaptured(
            payment_id=payment["id"],
            order_id=payment["order_id"],
            user_id=payment["user_id"],
            amount=payment["amount"],
            currency=payment["currency"],
            method=payment["method_type"] or "card",
        )
        async with self.db.transaction() as tx:
            done = await self.store.transition(tx, payment["id"], Status.REQUIRES_CAPTURE, Status.SUCCEEDED)
            if done:
                await self.store.add_entry(tx, payment, EntryKind.CAPTURE)
                await self.outbox.add(tx, event)
        if done:
            log.info("payment captured", order_id=payment["order_id"], payment_id=payment["id"])
        return done

    async def failure(self, payment: Row, source: Status, code: str, decision: Decision | None = None) -> bool:
        """A final failure: declined, denied or expired; the payment is canceled with ``code``."""
        event = PaymentFailed(
            payment_id=payment["id"],
            order_id=payment["order_id"],
            user_id=payment["user_id"],
            amount=payment["amount"],
            currency=payment["currency"],
            code=code,
        )
        columns = {"code": code} if decision is None else {"code": code, "decision": decision.value}
        async with self.db.transaction() as tx:
            done = await self.store.transition(tx, payment["id"], source, Status.CANCELED, **columns)
            if done:
                await self.outbox.add(tx, event)
        if done:
            log.info("payment failed", order_id=payment["order_id"], payment_id=payment["id"], code=code)
        return done

    async def cancel(self, payment: Row, source: Status) -> bool:
        """The order canceled it: a hold (requires_capture) is voided in the ledger; no event (orders asked)."""
        async with self.db.transaction() as tx:
            done = await self.store.transition(tx, payment["id"], source, Status.CANCELED)
            if done and source is Status.REQUIRES_CAPTURE:
                await self.store.add_entry(tx, payment, EntryKind.VOID)
        if done:
            log.info("payment canceled", order_id=payment["order_id"], payment_id=payment["id"], was=source.value)
        return done

    async def tombstone(self, order_id: str) -> bool:
        async with self.db.transaction() as tx:
            done = await self.store.insert_tombstone(tx, order_id)
        if done:
            log.info("payment canceled before any charge", order_id=order_id)
        return done

    async def refund(self, payment: Row, refund: Row) -> bool:
        """The provider refunded ``refund``: count it on the payment, one ledger row, payment.refunded.v1."""
        event = PaymentRefunded(
            payment_id=payment["id"],
            order_id=payment["order_id"],
            user_id=payment["user_id"],
            amount=refund["amount"],
            currency=payment["currency"],
        )
        async with self.db.transaction() as tx:
            done = await self.store.complete_refund(tx, refund)
            if done:
                await self.store.add_refund_entry(tx, refund, payment["currency"])
                await self.outbox.add(tx, event)
        if done:
            log.info("payment refunded", payment_id=payment["id"], refund_id=refund["id"], amount=refund["amount"])
        return done

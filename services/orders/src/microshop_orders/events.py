"""Consumers of payment events: the outcome of a payment the customer approved or denied resumes its order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from microshop_contracts import Envelope, PaymentCaptured, PaymentFailed
from microshop_kit.db import Tx
from microshop_orders.domain import Status
from microshop_orders.store import OrderStore

Handler = Callable[[Tx, Envelope], Awaitable[None]]


class PaymentEvents:
    """Records each payment outcome on its order in the inbox transaction; once committed, ``resume`` runs the
    order's saga (the recovery loop would also find it due, so a lost wake-up only costs a poll interval)."""

    def __init__(self, store: OrderStore, resume: Callable[[str], None]) -> None:
        self.store = store
        self.resume = resume

    def handlers(self) -> Mapping[str, Handler]:
        return {PaymentCaptured.TYPE: self.on_captured, PaymentFailed.TYPE: self.on_failed}

    async def on_captured(self, tx: Tx, event: Envelope) -> None:
        data = PaymentCaptured.model_validate(event.data)
        await self._record(tx, data.order_id, "captured")

    async def on_failed(self, tx: Tx, event: Envelope) -> None:
        data = PaymentFailed.model_validate(event.data)
        await self._record(tx, data.order_id, f"failed:{data.code}")

    async def _record(self, tx: Tx, order_id: str, outcome: str) -> None:
        status = await self.store.record_payment_outcome(tx, order_id, outcome)
        # Only an order waiting for the customer needs waking: a PENDING one is at its charge, whose runner reads
        # the answer itself (the recovery loop finds it due at once if that runner died).
        if status == Status.AWAITING_PAYMENT:
            tx.after_commit(lambda: self.resume(order_id))

"""Use cases of the payments service: save a method, charge an order, the customer's action, cancel, refund.

Crash and race safety rests on three things: every provider call is idempotent (authorize per order id,
refunds per refund id, the others per authorization), every state change is a conditional UPDATE from the
state it was read in (``records.py``), and the ledger takes at most one hold and one capture entry per payment
and one per refund. So any step may be retried, by the same request after a lost race or by a later request
after a crash, without moving money twice. A payment row exists (``processing``) before the provider is
asked, so a cancel that comes meanwhile is seen by the charge, which then voids what the provider gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Row
from microshop_kit.log import get_logger
from microshop_payments.domain import (
    ACTION_EXPIRED,
    AUTHENTICATION_FAILED,
    Card,
    Decision,
    IllegalTransition,
    MethodNotFound,
    NotRefundable,
    PaymentBusy,
    PaymentNotFound,
    PaypalAccount,
    Status,
    refund_amount,
)
from microshop_payments.idempotency import Idempotency
from microshop_payments.provider import AuthStatus, MethodRef, PaymentProvider, ProviderStateError
from microshop_payments.records import Recorder, moved
from microshop_payments.settings import PaymentsSettings
from microshop_payments.store import PaymentStore, new_id, now

log = get_logger("microshop.payments")

#: Rounds a request re-reads the payment after losing a race, before telling the caller to retry.
MAX_ROUNDS = 6
#: The refund key a cancel uses (client keys are stored as ``key:<Idempotency-Key>``, so they never clash).
CANCEL_REFUND_KEY = "cancel"


@dataclass(frozen=True, slots=True)
class ChargeCommand:
    order_id: str
    user_id: str
    amount: int
    currency: str
    payment_method_id: str

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Charged:
    payment: Row


@dataclass(frozen=True, slots=True)
class ActionRequired:
    """The customer must approve at ``/pay/<payment id>`` (3-D Secure, PayPal)."""

    payment: Row


@dataclass(frozen=True, slots=True)
class Declined:
    payment: Row


@dataclass(frozen=True, slots=True)
class Canceled:
    """The order's payment was canceled (by a cancel, or refunded in full) before this charge."""

    order_id: str


@dataclass(frozen=True, slots=True)
class OrderPaidDifferently:
    """The order already has a payment made with other parameters (another key was used)."""

    order_id: str


ChargeOutcome = Charged | ActionRequired | Declined | Canceled | OrderPaidDifferently


class CancelResult(StrEnum):
    REFUNDED = "refunded"
    VOIDED = "voided"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class RefundDone:
    refund: Row
    payment: Row


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(0.005 * (attempt + 1))


class PaymentsService:
    """The payments use cases. ``provider`` may be swapped (tests hold it to keep a charge in flight)."""

    def __init__(self, db: Database, provider: PaymentProvider, outbox: Outbox, settings: PaymentsSettings) -> None:
        self.db = db
        self.store = PaymentStore(db)
        self.provider = provider
        self.record = Recorder(db, self.store, outbox)
        self.idempotency = Idempotency(self.store, settings)
        self.settings = settings

    # ------------------------------------------------------------------------------------------- methods

    async def add_method(self, user_id: str, method: Card | PaypalAccount) -> dict[str, Any]:
        """Tokenize the method with the provider and keep only the token, brand, last 4 and expiry."""
        provider_ref = await self.provider.tokenize(method)
        row: dict[str, Any] = {
            "id": new_id("pm"),
            "user_id": user_id,
            "brand": None,
            "last4": None,
            "exp_month": None,
            "exp_year": None,
            "email": None,
            "provider_ref": provider_ref,
            "created_at": now(),
        }
        if isinstance(method, Card):
            row.update(type="card", brand=method.brand, last4=method.last4)
            row.update(exp_month=method.exp_month, exp_year=method.exp_year)
        else:
            row.update(type="paypal", email=method.email)
        async with self.db.transaction() as tx:
            await self.store.add_method(tx, row)
        log.info("payment method saved", payment_method_id=row["id"], type=row["type"], brand=row["brand"])
        return row

    async def method_for(self, command: ChargeCommand) -> MethodRef:
        method = await self.store.method_of(command.payment_method_id, command.user_id)
        if method is None:
            raise MethodNotFound(command.payment_method_id)
        return MethodRef(method["type"], method["provider_ref"])

    # ------------------------------------------------------------------------------------------- reads

    async def payment_of_order(self, order_id: str) -> Row:
        payment = await self.store.payment_by_order(order_id)
        if payment is None:
            raise PaymentNotFound("order", order_id)
        return payment

    async def payment_of_user(self, payment_id: str, user_id: str) -> Row:
        payment = await self.store.payment_of_user(payment_id, user_id)
        if payment is None:
            raise PaymentNotFound("id", payment_id)
        return payment

    # -------------------------------------------------------------------------------------------- charge

    async def charge(self, command: ChargeCommand, method: MethodRef) -> ChargeOutcome:
        """Authorize and capture the order's payment (or stop where the customer must act); idempotent."""
        for attempt in range(MAX_ROUNDS):
            payment = await self.store.payment_by_order(command.order_id) or await self._open(command)
            outcome = await self._charge_step(command, method, payment)
            if outcome is not None:
                return outcome
            await _backoff(attempt)
        raise PaymentBusy(f"of order {command.order_id}")

    async def _open(self, command: ChargeCommand) -> Row:
        """Record the payment as processing before the provider is asked (or read the one another made)."""
        async with self.db.transaction() as tx:
            opened = {**command.fields(), "id": new_id("pay"), "status": Status.PROCESSING.value}
            await self.store.insert_payment(tx, opened)
        return await self.payment_of_order(command.order_id)

    async def _charge_step(self, command: ChargeCommand, method: MethodRef, payment: Row) -> ChargeOutcome | None:
        """One move of the charge; its outcome, or None when the payment changed under it (read again)."""
        status = Status(payment["status"])
        if status is Status.CANCELED and payment["code"] is None:
            return Canceled(command.order_id)
        if command.fields() != {name: payment[name] for name in command.fields()}:
            return OrderPaidDifferently(command.order_id)
        if status is Status.PROCESSING:
            return await self._authorize(command, method, payment)
        if status is Status.REQUIRES_ACTION:
            return ActionRequired(payment)
        if status is Status.REQUIRES_CAPTURE:
            captured = await self._capture(payment)
            return None if captured is None else Charged(captured)
        if status is Status.SUCCEEDED:
            return Canceled(command.order_id) if payment["amount_refunded"] == payment["amount"] else Charged(payment)
        return Declined(payment)

    async def _authorize(self, command: ChargeCommand, method: MethodRef, payment: Row) -> ChargeOutcome | None:
        amount, currency = command.amount, command.currency
        result = await self.provider.authorize(amount, currency, method, idempotency_key=command.order_id)
        if result.status is AuthStatus.DECLINED:
            code = result.decline_code or "card_declined"
            if not await self.record.failure(payment, Status.PROCESSING, code):
                return None
            return Declined(moved(payment, status=Status.CANCELED.value, code=code))
        assert result.authorization_id is not None
        target = Status.REQUIRES_ACTION if result.status is AuthStatus.REQUIRES_ACTION else Status.REQUIRES_CAPTURE
        if not await self.record.authorization(payment, Status.PROCESSING, target, result.authorization_id):
            await self._void_orphan(command.order_id, result.authorization_id)
            return None
        payment = moved(payment, status=target.value, authorization_id=result.authorization_id)
        if target is Status.REQUIRES_ACTION:
            return ActionRequired(payment)
        captured = await self._capture(payment)
        return None if captured is None else Charged(captured)

    async def _void_orphan(self, order_id: str, authorization_id: str) -> None:
        """The provider authorized after the payment was canceled (or another request recorded it)."""
        current = await self.store.payment_by_order(order_id)
        if current is not None and current["authorization_id"] == authorization_id:
            return
        with contextlib.suppress(ProviderStateError):
            await self.provider.void(authorization_id)
        log.info("authorization of a canceled payment voided", order_id=order_id)

    async def _capture(self, payment: Row) -> Row | None:
        """Capture an authorized payment; the captured row, or None when a cancel voided it meanwhile."""
        try:
            await self.provider.capture(payment["authorization_id"], payment["amount"])
        except ProviderStateError:
            return None
        if not await self.record.capture(payment):
            return None
        return moved(payment, status=Status.SUCCEEDED.value)

    async def _sync(self, payment: Row, provider_state: str) -> None:
        """Record what the provider says happened that this service has not recorded yet (a request that did
        it is still running, or died); conditional moves make a race with that request harmless."""
        status = Status(payment["status"])
        if status is Status.REQUIRES_ACTION and provider_state in ("authorized", "captured"):
            auth = payment["authorization_id"]
            target = Status.REQUIRES_CAPTURE
            if await self.record.authorization(payment, status, target, auth, Decision.APPROVE):
                payment, status = moved(payment, status=target.value, decision=Decision.APPROVE.value), target
        if status is Status.REQUIRES_ACTION and provider_state == "failed":
            await self.record.failure(payment, status, AUTHENTICATION_FAILED, Decision.DENY)
        if status is Status.REQUIRES_CAPTURE and provider_state == "captured":
            await self.record.capture(payment)

    # ----------------------------------------------------------------------------------- customer action

    async def act(self, payment_id: str, user_id: str, decision: Decision) -> Row:
        """The customer's answer to the 3-D Secure or PayPal step; the same answer again gives the same result."""
        for attempt in range(MAX_ROUNDS):
            payment = await self.payment_of_user(payment_id, user_id)
            done = await self._act_step(payment, decision)
            if done is not None:
                return await self.payment_of_user(payment_id, user_id)
            await _backoff(attempt)
        raise PaymentBusy(payment_id)

    async def _act_step(self, payment: Row, decision: Decision) -> Row | None:
        status = Status(payment["status"])
        if status is Status.REQUIRES_ACTION:
            return await self._confirm(payment, decision)
        if payment["decision"] != decision.value:
            raise IllegalTransition(payment["id"], status, decision.value)
        if status is Status.REQUIRES_CAPTURE:  # approved, but the capture did not finish (a race or a crash)
            return await self._capture(payment)
        return payment

    async def _confirm(self, payment: Row, decision: Decision) -> Row | None:
        auth = payment["authorization_id"]
        try:
            result = await self.provider.confirm_action(auth, approved=decision is Decision.APPROVE)
        except ProviderStateError as exc:
            await self._sync(payment, exc.state)
            return None
        if result.status is AuthStatus.AUTHORIZED:
            target = Status.REQUIRES_CAPTURE
            if not await self.record.authorization(payment, Status.REQUIRES_ACTION, target, auth, decision):
                return None
            return await self._capture(moved(payment, status=target.value, decision=decision.value))
        code = result.decline_code or AUTHENTICATION_FAILED
        if not await self.record.failure(payment, Status.REQUIRES_ACTION, code, decision):
            return None
        return moved(payment, status=Status.CANCELED.value, code=code, decision=decision.value)

    # -------------------------------------------------------------------------------------------- cancel

    async def cancel(self, order_id: str) -> CancelResult:
        """Refund a captured payment (what is left of it), void an authorized or waiting one, cancel one being
        authorized, or leave a tombstone when there is none; idempotent."""
        for attempt in range(MAX_ROUNDS):
            result = await self._cancel_step(order_id, await self.store.payment_by_order(order_id))
            if result is not None:
                return result
            await _backoff(attempt)
        raise PaymentBusy(f"of order {order_id}")

    async def _cancel_step(self, order_id: str, payment: Row | None) -> CancelResult | None:
        if payment is None:
            return CancelResult.CANCELED if await self.record.tombstone(order_id) else None
        status = Status(payment["status"])
        if status is Status.PROCESSING:
            return CancelResult.CANCELED if await self.record.cancel(payment, status) else None
        if status in (Status.REQUIRES_ACTION, Status.REQUIRES_CAPTURE):
            return await self._void(payment, status)
        if status is Status.SUCCEEDED:
            await self._refund_rest(payment)
            return CancelResult.REFUNDED
        voided = payment["authorization_id"] is not None and payment["code"] is None
        return CancelResult.VOIDED if voided else CancelResult.CANCELED

    async def _void(self, payment: Row, status: Status) -> CancelResult | None:
        try:
            await self.provider.void(payment["authorization_id"])
        except ProviderStateError as exc:
            await self._sync(payment, exc.state)  # captured or answered meanwhile: the next round sees it
            return None
        return CancelResult.VOIDED if await self.record.cancel(payment, status) else None

    async def _refund_rest(self, payment: Row) -> None:
        for pending in await self.store.pending_refunds(payment["id"]):
            await self._finish_refund(payment, pending)  # a refund whose request died: finish it first
        refund = await self._reserve_refund(payment, CANCEL_REFUND_KEY, None, nothing_left_ok=True)
        if refund is not None:
            await self._finish_refund(payment, refund)

    # ------------------------------------------------------------------------------------------- refunds

    async def refund(self, order_id: str, key: str, amount: int | None) -> RefundDone:
        """Refund ``amount`` (default: all that is left) of the order's captured payment, once per ``key``."""
        payment = await self.payment_of_order(order_id)
        refund = await self._reserve_refund(payment, f"key:{key}", amount)
        assert refund is not None
        await self._finish_refund(payment, refund)
        return RefundDone(moved(refund, status="succeeded"), await self.payment_of_order(order_id))

    async def _reserve_refund(
        self, payment: Row, key: str, requested: int | None, *, nothing_left_ok: bool = False
    ) -> Row | None:
        """The refund with ``key``, made pending against what is left to refund if it is new."""
        async with self.db.transaction() as tx:
            existing = await self.store.refund_by_key(tx, payment["id"], key)
            if existing is not None:
                return existing
            locked = await self.store.lock_payment(tx, payment["id"])
            assert locked is not None
            if locked["status"] != Status.SUCCEEDED.value:
                raise NotRefundable(payment["id"], f"it is {locked['status']}, not captured")
            pending = await self.store.pending_refund_total(tx, payment["id"])
            if locked["amount"] - locked["amount_refunded"] - pending <= 0:
                if nothing_left_ok:
                    return None
                raise NotRefundable(payment["id"], "nothing is left to refund")
            amount = refund_amount(requested, locked["amount"], locked["amount_refunded"], pending)
            refund = {"id": new_id("re"), "payment_id": payment["id"], "key": key, "amount": amount}
            refund["status"] = "pending"
            await self.store.insert_refund(tx, refund)
        return refund

    async def _finish_refund(self, payment: Row, refund: Row) -> None:
        if refund["status"] == "pending":
            await self.provider.refund(payment["authorization_id"], refund["amount"], idempotency_key=refund["id"])
            await self.record.refund(payment, refund)

    # ----------------------------------------------------------------------------------------- upkeep

    async def expire_actions(self) -> int:
        """Cancel payments that waited for the customer longer than the TTL (payment.failed.v1, action_expired)."""
        before = (datetime.now(UTC) - timedelta(seconds=self.settings.action_ttl_seconds)).isoformat()
        expired = 0
        for payment in await self.store.payments_waiting_since(before):
            try:
                await self.provider.void(payment["authorization_id"])
            except ProviderStateError as exc:
                await self._sync(payment, exc.state)  # the customer answered just now: that answer stands
                continue
            expired += await self.record.failure(payment, Status.REQUIRES_ACTION, ACTION_EXPIRED)
        return expired

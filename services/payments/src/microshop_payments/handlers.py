"""Use cases of the payments service: save a method, charge an order idempotently, cancel its payment.

Crash and race safety rests on three things: every provider call is idempotent (authorize per order id, the
others per authorization), every state change is a conditional UPDATE from the state it was read in, and the
ledger takes at most one entry of each kind per payment. So any step may be retried, by the same request after
a lost race or by a later request after a crash, without moving money twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from microshop_contracts import PaymentRefunded
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Row
from microshop_kit.log import get_logger
from microshop_payments.domain import (
    CANCELED_STATES,
    Card,
    EntryKind,
    KeyInFlight,
    KeyReused,
    MethodNotFound,
    PaymentBusy,
    PaypalAccount,
    Status,
    request_hash,
)
from microshop_payments.provider import MethodRef, PaymentProvider, ProviderStateError
from microshop_payments.settings import PaymentsSettings
from microshop_payments.store import PaymentStore, StoredAnswer, new_id, now

log = get_logger("microshop.payments")

#: Rounds a charge or cancel re-reads the payment after losing a race, before telling the caller to retry.
MAX_ROUNDS = 6


@dataclass(frozen=True, slots=True)
class ChargeCommand:
    order_id: str
    user_id: str
    amount: int
    currency: str
    payment_method_id: str

    def fingerprint(self) -> str:
        return request_hash("POST /internal/v1/payments", _fields(self))


def _fields(command: ChargeCommand) -> dict[str, Any]:
    return asdict(command)


@dataclass(frozen=True, slots=True)
class Charged:
    payment: Row


@dataclass(frozen=True, slots=True)
class Declined:
    order_id: str
    decline_code: str


@dataclass(frozen=True, slots=True)
class Canceled:
    """The order's payment was canceled (refunded, voided or a tombstone) before this charge."""

    order_id: str
    status: Status


@dataclass(frozen=True, slots=True)
class OrderPaidDifferently:
    """The order already has a payment made with other parameters (another key was used)."""

    order_id: str


ChargeOutcome = Charged | Declined | Canceled | OrderPaidDifferently
#: Turns an outcome into the HTTP answer to store and replay (only api.py knows status codes).
Render = Callable[[ChargeOutcome], StoredAnswer]


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(0.005 * (attempt + 1))


class PaymentsService:
    """The payments use cases. ``provider`` may be swapped (tests hold it to keep a charge in flight)."""

    def __init__(self, db: Database, provider: PaymentProvider, outbox: Outbox, settings: PaymentsSettings) -> None:
        self.db = db
        self.store = PaymentStore(db)
        self.provider = provider
        self.outbox = outbox
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
            row.update(
                type="card",
                brand=method.brand,
                last4=method.last4,
                exp_month=method.exp_month,
                exp_year=method.exp_year,
            )
        else:
            row.update(type="paypal", email=method.email)
        async with self.db.transaction() as tx:
            await self.store.add_method(tx, row)
        log.info("payment method saved", payment_method_id=row["id"], type=row["type"], brand=row["brand"])
        return row

    # -------------------------------------------------------------------------------------------- charge

    async def charge(self, key: str, command: ChargeCommand, render: Render) -> StoredAnswer:
        """Authorize and capture once per key; a repeat with the same key and body gets the first answer."""
        method = await self.store.method_of(command.payment_method_id, command.user_id)
        if method is None:
            raise MethodNotFound(command.payment_method_id)
        replay = await self._claim(key, command.fingerprint())
        if replay is not None:
            return replay
        try:
            outcome = await self._charge(command, MethodRef(method["type"], method["provider_ref"]))
        except BaseException:
            # No answer yet: let a retry run it again (safe: every step is idempotent).
            await self.store.release_key(key)
            raise
        answer = render(outcome)
        await self.store.finish_key(key, answer)
        return answer

    async def _claim(self, key: str, fingerprint: str) -> StoredAnswer | None:
        """Take the key; the stored answer when it is done; KeyReused / KeyInFlight when it can't be taken."""
        at = datetime.now(UTC)
        async with self.db.transaction() as tx:
            record = await self.store.claim_key(tx, key, fingerprint, at.isoformat())
            if record is None:
                return None
            if record["request_hash"] != fingerprint:
                raise KeyReused(key)
            if record["state"] == "done":
                return StoredAnswer(int(record["status_code"]), _json(record["response_body"]), replayed=True)
            lease = timedelta(seconds=self.settings.idempotency_lease_seconds)
            if datetime.fromisoformat(record["locked_at"]) > at - lease:
                raise KeyInFlight(key)
            log.warning("taking over an abandoned idempotency key", key=key)
            await self.store.relock_key(tx, key, at.isoformat())
            return None

    async def _charge(self, command: ChargeCommand, method: MethodRef) -> ChargeOutcome:
        for attempt in range(MAX_ROUNDS):
            payment = await self.store.payment_by_order(command.order_id)
            if payment is None:
                payment = await self._authorize(command, method)
            outcome = None if payment is None else await self._advance(command, payment)
            if outcome is not None:
                return outcome
            await _backoff(attempt)
        raise KeyInFlight(command.order_id)

    async def _authorize(self, command: ChargeCommand, method: MethodRef) -> Row | None:
        """Authorize and record the payment; None when the order got a payment (or tombstone) meanwhile."""
        auth = await self.provider.authorize(command.amount, command.currency, method, idempotency_key=command.order_id)
        payment = {
            **_fields(command),
            "id": new_id("pay"),
            "authorization_id": auth.authorization_id,
            "status": (Status.REQUIRES_CAPTURE if auth.approved else Status.DECLINED).value,
            "decline_code": auth.decline_code,
        }
        async with self.db.transaction() as tx:
            inserted = await self.store.insert_payment(tx, payment)
            if inserted and auth.approved:
                await self.store.add_entry(tx, payment, EntryKind.AUTHORIZATION)
        if inserted:
            log.info(
                "payment authorized" if auth.approved else "payment declined",
                order_id=command.order_id,
                payment_id=payment["id"],
                decline_code=auth.decline_code,
            )
            return payment
        existing = await self.store.payment_by_order(command.order_id)
        if auth.authorization_id and (existing is None or existing["authorization_id"] != auth.authorization_id):
            await self.provider.void(auth.authorization_id)  # the order was canceled while we authorized
        return None

    async def _advance(self, command: ChargeCommand, payment: Row) -> ChargeOutcome | None:
        """Take the payment to its end state; None when it changed under us and must be read again."""
        status = Status(payment["status"])
        if status in CANCELED_STATES:
            return Canceled(command.order_id, status)
        if _fields(command) != {name: payment[name] for name in _fields(command)}:
            return OrderPaidDifferently(command.order_id)
        if status is Status.DECLINED:
            return Declined(command.order_id, payment["decline_code"] or "card_declined")
        if status is Status.CAPTURED:
            return Charged(payment)
        try:
            await self.provider.capture(payment["authorization_id"], payment["amount"])
        except ProviderStateError:
            return None  # a cancel voided it meanwhile
        async with self.db.transaction() as tx:
            moved = await self.store.transition(tx, payment["id"], Status.REQUIRES_CAPTURE, Status.CAPTURED)
            if moved:
                await self.store.add_entry(tx, payment, EntryKind.CAPTURE)
        if not moved:
            return None
        log.info("payment captured", order_id=command.order_id, payment_id=payment["id"], amount=payment["amount"])
        return Charged({**payment, "status": Status.CAPTURED.value})

    # -------------------------------------------------------------------------------------------- cancel

    async def cancel(self, order_id: str) -> Status:
        """Refund a captured payment, void an authorized one, or leave a tombstone; idempotent."""
        for attempt in range(MAX_ROUNDS):
            payment = await self.store.payment_by_order(order_id)
            status = await self._cancel_step(order_id, payment)
            if status is not None:
                return status
            await _backoff(attempt)
        raise PaymentBusy(order_id)

    async def _cancel_step(self, order_id: str, payment: Row | None) -> Status | None:
        """One move towards canceled; the final status, or None to read the payment again."""
        if payment is None:
            async with self.db.transaction() as tx:
                inserted = await self.store.insert_tombstone(tx, order_id)
            if inserted:
                log.info("payment canceled before any charge", order_id=order_id)
            return Status.CANCELED if inserted else None
        status = Status(payment["status"])
        if status in CANCELED_STATES:
            return status
        if status is Status.DECLINED:
            async with self.db.transaction() as tx:
                moved = await self.store.transition(tx, payment["id"], Status.DECLINED, Status.CANCELED)
            return Status.CANCELED if moved else None
        if status is Status.REQUIRES_CAPTURE:
            return await self._void(payment)
        return await self._refund(payment)

    async def _void(self, payment: Row) -> Status | None:
        try:
            await self.provider.void(payment["authorization_id"])
        except ProviderStateError as exc:
            if exc.state == "captured":
                await self._record_capture(payment)  # a charge captured it meanwhile: refund next round
            return None
        async with self.db.transaction() as tx:
            moved = await self.store.transition(tx, payment["id"], Status.REQUIRES_CAPTURE, Status.VOIDED)
            if moved:
                await self.store.add_entry(tx, payment, EntryKind.VOID)
        if moved:
            log.info("payment voided", order_id=payment["order_id"], payment_id=payment["id"])
        return Status.VOIDED if moved else None

    async def _record_capture(self, payment: Row) -> None:
        """The provider captured it but the charge that did so has not recorded it (yet, or ever: a crash)."""
        async with self.db.transaction() as tx:
            if await self.store.transition(tx, payment["id"], Status.REQUIRES_CAPTURE, Status.CAPTURED):
                await self.store.add_entry(tx, payment, EntryKind.CAPTURE)

    async def _refund(self, payment: Row) -> Status | None:
        await self.provider.refund(payment["authorization_id"], payment["amount"])
        event = PaymentRefunded(
            payment_id=payment["id"],
            order_id=payment["order_id"],
            user_id=payment["user_id"],
            amount=payment["amount"],
            currency=payment["currency"],
        )
        async with self.db.transaction() as tx:
            moved = await self.store.transition(tx, payment["id"], Status.CAPTURED, Status.REFUNDED)
            if moved:
                await self.store.add_entry(tx, payment, EntryKind.REFUND)
                await self.outbox.add(tx, event)
        if moved:
            log.info("payment refunded", order_id=payment["order_id"], payment_id=payment["id"])
        return Status.REFUNDED if moved else None

    # ----------------------------------------------------------------------------------------- upkeep

    async def prune_loop(self) -> None:
        """Delete finished idempotency records past their TTL (the payment row keeps answering after)."""
        ttl = timedelta(hours=self.settings.idempotency_ttl_hours)
        while True:
            removed = await self.store.prune_keys((datetime.now(UTC) - ttl).isoformat())
            if removed:
                log.info("idempotency records pruned", count=removed)
            await asyncio.sleep(self.settings.prune_interval_seconds)


def _json(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value

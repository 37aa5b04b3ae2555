"""The checkout saga: validate user -> reserve stock -> charge -> commit stock -> confirm; compensate in reverse.

The step reached is persisted after every step, and every call carries the order id as its idempotency key, so
the recovery loop can resume any saga a crash or an outage left unfinished without a second effect. A payment
that needs the customer (3-D Secure, PayPal) parks the order as AWAITING_PAYMENT; payment events or a poll of
payments resume it, and its action deadline rejects it. Cancelling a confirmed order (refund, restock) is driven
by the same runner, so it also survives a crash half way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from microshop_contracts import OrderCancelled, OrderConfirmed, OrderLine, OrderRejected
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Row, Tx
from microshop_kit.errors import UpstreamUnavailable
from microshop_kit.http import ServiceClient, UpstreamResponse
from microshop_orders import domain
from microshop_orders.domain import IN_PROGRESS, Status, Step
from microshop_orders.store import OrderStore, lines_from_json, now

log = logging.getLogger("microshop.orders.saga")

#: Charge answers meaning "the first request with this key is still running": ask again later.
IN_FLIGHT_PROBLEMS = frozenset({"/problems/idempotency-key-in-flight", "/problems/payment-in-flight"})
CAPTURED = frozenset({"succeeded", "captured"})
FAILED = frozenset({"failed", "canceled", "declined", "voided", "refunded"})


class Transient(Exception):
    """No definite answer from a service (down, timeout, 5xx): try the same step again later."""


class Waiting(Exception):
    """The saga waits for the customer (a payment action): look again after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"waiting {delay:.1f} s")
        self.delay = delay


@dataclass(frozen=True)
class Upstreams:
    users: ServiceClient
    products: ServiceClient
    payments: ServiceClient


@dataclass(frozen=True)
class SagaTimings:
    """How long the saga waits for what; see the settings of the same names."""

    timeout_seconds: float = 120.0
    lease_seconds: float = 30.0
    action_timeout_seconds: float = 900.0
    payment_poll_seconds: float = 5.0
    payment_attempts: int = 3


def _answer(response: UpstreamResponse, what: str) -> UpstreamResponse:
    if response.status >= 500:
        raise Transient(f"{what}: HTTP {response.status}")
    return response


def _body(response: UpstreamResponse) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _decline_code(body: dict[str, Any]) -> str | None:
    code = body.get("code") or body.get("decline_code")
    return str(code) if code else None


class Saga:
    """Drives one order at a time to a final status; safe to run from several places at once."""

    def __init__(
        self,
        db: Database,
        store: OrderStore,
        upstreams: Upstreams,
        outbox: Outbox,
        *,
        timings: SagaTimings | None = None,
        hold_at: str | None = None,
        on_final: Callable[[Tx, Row], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.up = upstreams
        self.outbox = outbox
        self.timings = timings or SagaTimings()
        self.hold_at = hold_at
        #: Called inside the transaction that makes an order final (to store the answer its key replays).
        self.on_final = on_final
        self.owner = secrets.token_hex(6)
        self.running: set[asyncio.Task[None]] = set()

    def new_owner(self) -> str:
        """A lease token for one run: two runners in one process (the request and the recovery loop) exclude
        each other as two processes do."""
        return f"{self.owner}-{secrets.token_hex(4)}"

    def start(self, order_id: str, *, leased_to: str | None = None) -> asyncio.Task[None]:
        """Run the order's saga in the background (a no-op when another runner holds it). ``leased_to``: the
        order was written already leased to this owner (a new order), so the run needs no claim."""
        task = asyncio.create_task(self.run(order_id, leased_to=leased_to), name=f"saga-{order_id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def run(self, order_id: str, *, leased_to: str | None = None) -> None:
        owner = leased_to or self.new_owner()
        if leased_to is None and not await self.store.claim(order_id, owner, self.timings.lease_seconds):
            return
        try:
            await self._drive(order_id)
        except Waiting as wait:
            await self.store.postpone(order_id, wait.delay, "waiting for the payment", count=False)
            return
        except (Transient, UpstreamUnavailable) as exc:
            await self._later(order_id, str(exc))
            return
        except asyncio.CancelledError:
            await asyncio.shield(self.store.release(order_id, owner))
            raise
        except Exception as exc:
            # A bug or a database outage: keep the order for the recovery loop, never leave it leased.
            log.exception("saga step failed", extra={"order_id": order_id})
            await self._later(order_id, repr(exc))
            return

    async def _later(self, order_id: str, error: str) -> None:
        order = await self.store.get(order_id)
        if order is None:
            return
        if order["status"] in IN_PROGRESS and not order["compensating"] and self._overdue(order):
            await self.store.start_compensation(
                order_id, "We could not complete your order in time. Your card was not charged."
            )
        delay = min(0.25 * 2 ** int(order["attempts"]), 10.0)
        log.warning("saga step postponed", extra={"order_id": order_id, "error": error, "retry_in": delay})
        await self.store.postpone(order_id, delay, error)

    def _overdue(self, order: Row) -> bool:
        """Past the saga's time limit; an order waiting for the customer has the action deadline instead."""
        if order["action_deadline"]:
            return now() > datetime.fromisoformat(order["action_deadline"])
        age = (now() - datetime.fromisoformat(order["created_at"])).total_seconds()
        return age > self.timings.timeout_seconds

    async def _hold(self, point: str) -> None:
        """Fault injection for the crash tests: stop here for good, so the test can kill the process here."""
        if point == self.hold_at:
            log.warning("saga held at %s (fault injection)", point)
            await asyncio.Event().wait()

    async def _drive(self, order_id: str) -> None:
        """Take steps until the order is final or waits. Each step returns the order as it wrote it (or None
        when it made the order final), so the next step needs no read of its own."""
        steps: dict[Step, Callable[[Row], Awaitable[Row | None]]] = {
            Step.STARTED: self._validate_user,
            Step.USER_VALIDATED: self._reserve,
            Step.RESERVED: self._charge,
            Step.PAYMENT_ACTION: self._await_payment,
            Step.CHARGED: self._commit,
            Step.COMMITTED: self._confirm,
        }
        order = await self.store.get(order_id)
        while order is not None:
            if order["cancel_requested"] and order["status"] == Status.CONFIRMED:
                await self._cancel_confirmed(order)
                return
            if order["status"] not in IN_PROGRESS:
                return
            if order["compensating"]:
                await self._compensate(order)
                return
            order = await steps[Step(order["saga_step"])](order)

    # ----------------------------------------------------------------------------------------------- steps

    async def _validate_user(self, order: Row) -> Row | None:
        response = _answer(await self.up.users.get(f"/internal/v1/users/{order['user_id']}"), "users")
        await self._hold("after:users")
        body = _body(response) if response.status == 200 else {}
        if response.status != 200 or not body.get("can_order"):
            return await self.store.start_compensation(order["id"], "Your account cannot place orders right now.")
        return await self.store.advance(
            order["id"], Step.USER_VALIDATED, email=body["email"], customer_name=body["name"]
        )

    async def _reserve(self, order: Row) -> Row | None:
        lines = [{"sku": line.sku, "quantity": line.quantity} for line in lines_from_json(order["lines"])]
        response = _answer(
            await self.up.products.post(
                "/internal/v1/reservations", json={"order_id": order["id"], "lines": lines}, idempotent=True
            ),
            "products",
        )
        await self._hold("after:reserve")
        body = _body(response)
        if response.status in (200, 201):
            return await self.store.advance(order["id"], Step.RESERVED)
        if response.status == 409 and body.get("type") == "/problems/out-of-stock":
            return await self.store.start_compensation(order["id"], domain.out_of_stock_reason(body.get("skus", [])))
        return await self.store.start_compensation(order["id"], "Your order could not be reserved.")

    async def _charge(self, order: Row) -> Row | None:
        response = await self._send_charge(order)
        answer = _body(response)
        if response.status >= 500 and _decline_code(answer) == "processing_error":
            return await self.store.start_compensation(order["id"], domain.decline_reason("processing_error"))
        if response.status >= 500:
            raise Transient(f"payments: HTTP {response.status}")
        if response.status in (200, 201) and answer.get("status") in CAPTURED:
            return await self.store.advance(order["id"], Step.CHARGED, payment_id=answer.get("id"))
        if response.status in (200, 201):
            deadline = now() + timedelta(seconds=self.timings.action_timeout_seconds)
            next_action = answer.get("next_action") or {}
            return await self.store.await_payment_action(
                order["id"], payment_id=answer.get("id"), next_action=next_action, deadline=deadline
            )
        if response.status == 402:
            return await self.store.start_compensation(order["id"], domain.decline_reason(_decline_code(answer)))
        if response.status == 409 and answer.get("type") in IN_FLIGHT_PROBLEMS:
            raise Transient("payments: the charge is still in flight")
        return await self.store.start_compensation(order["id"], "Your payment method could not be used.")

    async def _send_charge(self, order: Row) -> UpstreamResponse:
        """Charge with the order id as the key. The provider's retryable processing error is tried again here,
        a few times with backoff, so that the customer gets a final answer within the checkout budget."""
        body = {
            "order_id": order["id"],
            "user_id": order["user_id"],
            "amount": order["total"],
            "currency": order["currency"],
            "payment_method_id": order["payment_method_id"],
        }
        for attempt in range(self.timings.payment_attempts):
            if attempt:
                await asyncio.sleep(0.1 * 2**attempt)
            response = await self.up.payments.post(
                "/internal/v1/payments", json=body, headers={"Idempotency-Key": order["id"]}, idempotent=True
            )
            await self._hold("after:charge")
            if response.status < 500 or _decline_code(_body(response)) != "processing_error":
                break
        return response

    async def _await_payment(self, order: Row) -> Row | None:
        """The customer approves or denies the payment elsewhere; an event or a poll tells the outcome."""
        outcome = order["payment_outcome"] or await self._poll_payment(order["id"])
        if outcome == "captured":
            return await self.store.advance(
                order["id"], Step.CHARGED, status=Status.PENDING.value, next_action=None, note="Payment approved"
            )
        if outcome is not None:
            code = outcome.removeprefix("failed:") or None
            return await self.store.start_compensation(order["id"], domain.decline_reason(code))
        if self._overdue(order):
            return await self.store.start_compensation(order["id"], domain.decline_reason("payment_not_completed"))
        delay = self.timings.payment_poll_seconds
        if order["action_deadline"]:
            delay = min(delay, (datetime.fromisoformat(order["action_deadline"]) - now()).total_seconds())
        raise Waiting(max(0.05, delay))

    async def _poll_payment(self, order_id: str) -> str | None:
        """``captured``, ``failed:<code>`` or None (still waiting, or no payment known yet)."""
        response = _answer(await self.up.payments.get(f"/internal/v1/payments/{order_id}"), "payments")
        if response.status != 200:
            return None
        body = _body(response)
        if body.get("status") in CAPTURED:
            return "captured"
        if body.get("status") in FAILED:
            return f"failed:{_decline_code(body) or ''}"
        return None

    async def _commit(self, order: Row) -> Row | None:
        response = _answer(
            await self.up.products.post(f"/internal/v1/reservations/{order['id']}/commit", idempotent=True),
            "products",
        )
        await self._hold("after:commit")
        if response.status == 200:
            # The confirmation is the commit's persisted result: a crash before it is written resumes at the
            # commit, which products answers again without a second effect.
            await self._confirm(order)
            return None
        return await self.store.start_compensation(
            order["id"], "Your reserved items were released before payment completed; you were refunded."
        )

    async def _confirm(self, order: Row) -> None:
        await self._hold("before:confirm")
        lines = lines_from_json(order["lines"])
        event = OrderConfirmed(
            order_id=order["id"],
            user_id=order["user_id"],
            email=order["email"],
            name=order["customer_name"],
            lines=[OrderLine(sku=x.sku, name=x.name, quantity=x.quantity, unit_price=x.unit_price) for x in lines],
            total=order["total"],
            currency=order["currency"],
            shipping_address=json.loads(order["shipping_address"]),
        )
        async with self.db.transaction() as tx:
            final = await self.store.finish(
                tx, order["id"], Status.CONFIRMED, None, "Payment captured, order confirmed"
            )
            for line in lines:
                await tx.execute(
                    "DELETE FROM cart_lines WHERE user_id = :u AND sku = :sku", {"u": order["user_id"], "sku": line.sku}
                )
            await self.outbox.add(tx, event)
            await self._final(tx, final)

    async def _final(self, tx: Tx, order: Row) -> None:
        if self.on_final is not None:
            await self.on_final(tx, order)

    # -------------------------------------------------------------------------------------------- compensation

    async def _cancel_payment(self, order_id: str) -> str:
        """Refund, void or tombstone the order's payment; returns what payments did."""
        response = _answer(
            await self.up.payments.post(f"/internal/v1/payments/{order_id}/cancel", idempotent=True), "payments"
        )
        await self._hold("after:payment_cancel")
        if response.status != 200:
            raise Transient(f"payments cancel: HTTP {response.status}")
        return str(_body(response).get("status", ""))

    async def _compensate(self, order: Row) -> None:
        step = Step(order["saga_step"])
        order_id = order["id"]
        refunded = False
        if step in (Step.RESERVED, Step.PAYMENT_ACTION, Step.CHARGED, Step.COMMITTED):
            # A charge may have gone through even when its answer was lost: cancel refunds, voids or
            # leaves a tombstone so that a late charge for this order is refused.
            refunded = await self._cancel_payment(order_id) == "refunded"
        if step != Step.STARTED:
            response = _answer(
                await self.up.products.post(f"/internal/v1/reservations/{order_id}/release", idempotent=True),
                "products",
            )
            await self._hold("after:release")
            if response.status != 200:
                raise Transient(f"products release: HTTP {response.status}")
        reason = order["reason"] or "Your order could not be completed."
        if order["cancel_requested"]:
            await self._finish_cancelled(order, reason, refunded=order["total"] if refunded else 0)
            return
        event = OrderRejected(
            order_id=order_id,
            user_id=order["user_id"],
            email=order["email"] or "",
            name=order["customer_name"] or "",
            reason=reason,
        )
        async with self.db.transaction() as tx:
            final = await self.store.finish(tx, order_id, Status.REJECTED, reason, reason)
            await self.outbox.add(tx, event)
            await self._final(tx, final)

    async def _cancel_confirmed(self, order: Row) -> None:
        """The customer cancelled a confirmed order before shipping: refund the payment, return the stock."""
        await self._cancel_payment(order["id"])
        response = _answer(
            await self.up.products.post(f"/internal/v1/reservations/{order['id']}/return", idempotent=True),
            "products",
        )
        await self._hold("after:return")
        if response.status != 200:
            raise Transient(f"products return: HTTP {response.status}")
        await self._finish_cancelled(order, order["reason"] or "Cancelled at your request.", refunded=order["total"])

    async def _finish_cancelled(self, order: Row, reason: str, *, refunded: int) -> None:
        event = OrderCancelled(
            order_id=order["id"],
            user_id=order["user_id"],
            email=order["email"] or "",
            name=order["customer_name"] or "",
            refunded=refunded,
            currency=order["currency"],
            reason=reason,
        )
        note = "Order cancelled" + (", payment refunded" if refunded else "")
        async with self.db.transaction() as tx:
            final = await self.store.finish(tx, order["id"], Status.CANCELLED, reason, note, refunded=refunded)
            await self.outbox.add(tx, event)
            await self._final(tx, final)


async def recovery_loop(saga: Saga, store: OrderStore, interval: float) -> None:
    """Resume sagas left unfinished (a crash, a timeout, a service that was down, a payment action)."""
    while True:
        try:
            due = await store.due()
            await asyncio.gather(*(saga.run(order_id) for order_id in due))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("saga recovery pass failed")
        await asyncio.sleep(interval)

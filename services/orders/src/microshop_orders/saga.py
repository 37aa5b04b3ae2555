"""The checkout saga: validate user -> reserve stock -> charge -> commit stock -> confirm; compensate in reverse.

The step reached is persisted after every step, and every call carries the order id as its idempotency key, so
the recovery loop can resume any saga a crash or an outage left unfinished without a second effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from microshop_contracts import OrderConfirmed, OrderLine, OrderRejected
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Row
from microshop_kit.errors import UpstreamUnavailable
from microshop_kit.http import ServiceClient, UpstreamResponse
from microshop_orders import domain
from microshop_orders.domain import Status, Step
from microshop_orders.store import OrderStore, lines_from_json, now

log = logging.getLogger("microshop.orders.saga")


class Transient(Exception):
    """No definite answer from a service (down, timeout, 5xx): try the same step again later."""


@dataclass(frozen=True)
class Upstreams:
    users: ServiceClient
    products: ServiceClient
    payments: ServiceClient


def _answer(response: UpstreamResponse, what: str) -> UpstreamResponse:
    if response.status >= 500:
        raise Transient(f"{what}: HTTP {response.status}")
    return response


class Saga:
    """Drives one order at a time to CONFIRMED or REJECTED; safe to run from several places at once."""

    def __init__(
        self,
        db: Database,
        store: OrderStore,
        upstreams: Upstreams,
        outbox: Outbox,
        *,
        timeout_seconds: float,
        lease_seconds: float,
        on_finished: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.up = upstreams
        self.outbox = outbox
        self.timeout_seconds = timeout_seconds
        self.lease_seconds = lease_seconds
        self.on_finished = on_finished
        self.owner = secrets.token_hex(6)

    async def run(self, order_id: str) -> None:
        if not await self.store.claim(order_id, self.owner, self.lease_seconds):
            return
        try:
            await self._drive(order_id)
        except (Transient, UpstreamUnavailable) as exc:
            await self._later(order_id, str(exc))
            return
        except asyncio.CancelledError:
            await asyncio.shield(self.store.release(order_id, self.owner))
            raise
        except Exception as exc:
            # A bug or a database outage: keep the order for the recovery loop, never leave it leased.
            log.exception("saga step failed", extra={"order_id": order_id})
            await self._later(order_id, repr(exc))
            return
        if self.on_finished is not None:
            await self.on_finished(order_id)

    async def _later(self, order_id: str, error: str) -> None:
        order = await self.store.get(order_id)
        if order is None:
            return
        age = (now() - datetime.fromisoformat(order["created_at"])).total_seconds()
        if not order["compensating"] and age > self.timeout_seconds:
            await self.store.start_compensation(
                order_id, "We could not complete your order in time. Your card was not charged."
            )
        delay = min(0.25 * 2 ** int(order["attempts"]), 10.0)
        log.warning("saga step postponed", extra={"order_id": order_id, "error": error, "retry_in": delay})
        await self.store.postpone(order_id, delay, error)

    async def _drive(self, order_id: str) -> None:
        steps = {
            Step.STARTED: self._validate_user,
            Step.USER_VALIDATED: self._reserve,
            Step.RESERVED: self._charge,
            Step.CHARGED: self._commit,
            Step.COMMITTED: self._confirm,
        }
        while True:
            order = await self.store.get(order_id)
            if order is None or order["status"] != Status.PENDING:
                return
            if order["compensating"]:
                await self._compensate(order)
                return
            await steps[Step(order["saga_step"])](order)

    # ----------------------------------------------------------------------------------------------- steps

    async def _validate_user(self, order: Row) -> None:
        response = _answer(await self.up.users.get(f"/internal/v1/users/{order['user_id']}"), "users")
        body = response.json() if response.status == 200 else {}
        if response.status != 200 or not body.get("can_order"):
            await self.store.start_compensation(order["id"], "Your account cannot place orders right now.")
            return
        await self.store.advance(order["id"], Step.USER_VALIDATED, email=body["email"], customer_name=body["name"])

    async def _reserve(self, order: Row) -> None:
        lines = [{"sku": line.sku, "quantity": line.quantity} for line in lines_from_json(order["lines"])]
        response = _answer(
            await self.up.products.post(
                "/internal/v1/reservations", json={"order_id": order["id"], "lines": lines}, idempotent=True
            ),
            "products",
        )
        if response.status in (200, 201):
            await self.store.advance(order["id"], Step.RESERVED)
        elif response.status == 409 and response.json().get("type") == "/problems/out-of-stock":
            await self.store.start_compensation(order["id"], domain.out_of_stock_reason(response.json()["skus"]))
        else:
            await self.store.start_compensation(order["id"], "Your order could not be reserved.")

    async def _charge(self, order: Row) -> None:
        body = {
            "order_id": order["id"],
            "user_id": order["user_id"],
            "amount": order["total"],
            "currency": order["currency"],
            "payment_method_id": order["payment_method_id"],
        }
        response = _answer(
            await self.up.payments.post(
                "/internal/v1/payments", json=body, headers={"Idempotency-Key": order["id"]}, idempotent=True
            ),
            "payments",
        )
        if response.status in (200, 201):
            await self.store.advance(order["id"], Step.CHARGED, payment_id=response.json()["id"])
        elif response.status == 402:
            await self.store.start_compensation(order["id"], domain.decline_reason(response.json().get("decline_code")))
        elif response.status == 409 and response.json().get("type") == "/problems/idempotency-key-in-flight":
            raise Transient("payments: the charge is still in flight")
        else:
            await self.store.start_compensation(order["id"], "Your payment method could not be used.")

    async def _commit(self, order: Row) -> None:
        response = _answer(
            await self.up.products.post(f"/internal/v1/reservations/{order['id']}/commit", idempotent=True),
            "products",
        )
        if response.status == 200:
            await self.store.advance(order["id"], Step.COMMITTED)
        else:
            await self.store.start_compensation(
                order["id"], "Your reserved items were released before payment completed; you were refunded."
            )

    async def _confirm(self, order: Row) -> None:
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
            await self.store.finish(tx, order["id"], Status.CONFIRMED, None, "Payment captured, order confirmed")
            for line in lines:
                await tx.execute(
                    "DELETE FROM cart_lines WHERE user_id = :u AND sku = :sku", {"u": order["user_id"], "sku": line.sku}
                )
            await self.outbox.add(tx, event)

    # -------------------------------------------------------------------------------------------- compensation

    async def _compensate(self, order: Row) -> None:
        step = Step(order["saga_step"])
        order_id = order["id"]
        if step in (Step.RESERVED, Step.CHARGED, Step.COMMITTED):
            # A charge may have gone through even when its answer was lost: cancel refunds, voids or
            # leaves a tombstone so that a late charge for this order is refused.
            response = _answer(
                await self.up.payments.post(f"/internal/v1/payments/{order_id}/cancel", idempotent=True), "payments"
            )
            if response.status != 200:
                raise Transient(f"payments cancel: HTTP {response.status}")
        if step != Step.STARTED:
            response = _answer(
                await self.up.products.post(f"/internal/v1/reservations/{order_id}/release", idempotent=True),
                "products",
            )
            if response.status != 200:
                raise Transient(f"products release: HTTP {response.status}")
        reason = order["reason"] or "Your order could not be completed."
        event = OrderRejected(
            order_id=order_id,
            user_id=order["user_id"],
            email=order["email"] or "",
            name=order["customer_name"] or "",
            reason=reason,
        )
        async with self.db.transaction() as tx:
            await self.store.finish(tx, order_id, Status.REJECTED, reason, reason)
            await self.outbox.add(tx, event)


async def recovery_loop(saga: Saga, store: OrderStore, interval: float) -> None:
    """Resume sagas left unfinished (a crash, a timeout, a service that was down)."""
    while True:
        try:
            for order_id in await store.due():
                await saga.run(order_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("saga recovery pass failed")
        await asyncio.sleep(interval)

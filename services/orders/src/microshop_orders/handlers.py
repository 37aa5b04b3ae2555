"""Orders' use cases: the cart, placing an order (idempotently) and reading orders."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from microshop_contracts import OrderDelivered, OrderShipped
from microshop_kit.bus import Outbox
from microshop_kit.db import Row, Tx
from microshop_kit.errors import IntegrityError, UpstreamUnavailable
from microshop_kit.http import ServiceClient
from microshop_orders import domain
from microshop_orders.domain import IN_PROGRESS, Line, Status
from microshop_orders.saga import Saga
from microshop_orders.store import CartStore, OrderStore, lines_from_json


class KeyReused(Exception):
    """The Idempotency-Key was used before with a different request body."""


class KeyInFlight(Exception):
    """The first request with this Idempotency-Key is still being processed."""


class PaymentsUnavailable(Exception):
    """Payments is failing (its circuit is open): no order is taken until it recovers."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("payments circuit open")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: int
    currency: str


@dataclass
class Orders:
    carts: CartStore
    orders: OrderStore
    saga: Saga
    products: ServiceClient
    payments: ServiceClient
    outbox: Outbox
    checkout_budget: float

    # -------------------------------------------------------------------------------------------------- cart

    async def catalog(self, skus: list[str]) -> dict[str, Product]:
        """Current name and price of each active SKU (unknown or inactive SKUs are left out)."""
        if not skus:
            return {}
        response = await self.products.get("/internal/v1/products", params=[("sku", sku) for sku in skus])
        if response.status != 200:
            raise UpstreamUnavailable("products", f"product lookup answered HTTP {response.status}")
        return {
            item["sku"]: Product(item["sku"], item["name"], item["price"], item["currency"])
            for item in response.json()["items"]
            if item.get("active", True)
        }

    async def cart(self, user_id: str) -> dict[str, Any]:
        rows = await self.carts.lines(user_id)
        return _cart_view(rows, await self.catalog([row["sku"] for row in rows]))

    async def replace_cart(self, user_id: str, wanted: list[tuple[str, int]]) -> dict[str, Any]:
        current = await self.catalog([sku for sku, _ in wanted])
        missing = [sku for sku, _ in wanted if sku not in current]
        if missing:
            raise domain.UnknownProducts(missing)
        lines = [Line(sku, current[sku].name, qty, current[sku].price, current[sku].currency) for sku, qty in wanted]
        if lines:
            domain.total_of(lines)
        # The cart as just written, priced with the catalog just read: no second read of either.
        return _cart_view(await self.carts.replace(user_id, lines), current)

    async def clear_cart(self, user_id: str) -> None:
        await self.carts.clear(user_id)

    # ------------------------------------------------------------------------------------------------ orders

    async def place(
        self, *, user_id: str, key: str, request_hash: str, address: dict[str, str], payment_method_id: str
    ) -> tuple[int, dict[str, Any]]:
        """Create the order from the cart and run the saga within the checkout budget.

        Returns the HTTP status (201 final, 202 still pending) and the order; the same key replays it.
        """
        existing = await self.orders.idempotency(user_id, key)
        if existing is not None:
            return self._replay(existing, request_hash)
        breaker = self.payments.breaker
        if breaker is not None and breaker.state == "open":
            # Fail fast, before any stock is held: nothing is stored, so the same key may be sent again later.
            raise PaymentsUnavailable(breaker.open_seconds)
        lines = await self._priced_cart(user_id)
        total, currency = domain.total_of(lines)
        order_id = str(uuid.uuid4())
        runner = self.saga.new_owner()
        try:
            await self.orders.create(
                order_id=order_id,
                user_id=user_id,
                key=key,
                request_hash=request_hash,
                lines=lines,
                total=total,
                currency=currency,
                address=address,
                payment_method_id=payment_method_id,
                owner=runner,
                lease_seconds=self.saga.timings.lease_seconds,
            )
        except IntegrityError:
            existing = await self.orders.idempotency(user_id, key)
            if existing is None:
                raise
            return self._replay(existing, request_hash)
        await asyncio.wait({self.saga.start(order_id, leased_to=runner)}, timeout=self.checkout_budget)
        stored = await self.orders.idempotency(user_id, key)
        assert stored is not None
        if stored["state"] != "done":
            # Past the budget: answer 202 with the order as it is now, unless the saga settles the key first.
            async with self.orders.db.transaction() as tx:
                view = await self._view(tx, order_id)
                assert view is not None
                status = 202 if view["status"] in IN_PROGRESS else 201
                await self.orders.finish_idempotency(tx, user_id, order_id, status, view)
                stored = await self.orders.idempotency(user_id, key, tx)
            assert stored is not None
        return int(stored["status_code"]), json.loads(stored["response_body"])

    async def _priced_cart(self, user_id: str) -> list[Line]:
        rows = await self.carts.lines(user_id)
        if not rows:
            raise domain.EmptyCart("The cart is empty.")
        current = await self.catalog([row["sku"] for row in rows])
        missing = [row["sku"] for row in rows if row["sku"] not in current]
        if missing:
            raise domain.UnknownProducts(missing)
        changes = domain.price_changes(
            {row["sku"]: row["unit_price"] for row in rows}, {sku: p.price for sku, p in current.items()}
        )
        if changes:
            # The customer is shown the new prices; placing the order again accepts them.
            await self.carts.reprice(user_id, {change.sku: change.new_price for change in changes})
            raise domain.PricesChanged(changes)
        return [
            Line(
                row["sku"],
                current[row["sku"]].name,
                row["quantity"],
                current[row["sku"]].price,
                current[row["sku"]].currency,
            )
            for row in rows
        ]

    @staticmethod
    def _replay(existing: Row, request_hash: str) -> tuple[int, dict[str, Any]]:
        if existing["request_hash"] != request_hash:
            raise KeyReused
        if existing["state"] != "done":
            raise KeyInFlight
        return int(existing["status_code"]), json.loads(existing["response_body"])

    async def settle(self, tx: Tx, order: Row) -> None:
        """Inside the transaction that makes the order final: store the final order as the answer its
        Idempotency-Key replays, unless the request already answered (202 past the budget). The request that is
        still waiting then finds its answer stored, and so does a retry after a crash."""
        view = _order_view(order, await self.orders.timeline(order["id"], tx))
        await self.orders.finish_idempotency(tx, order["user_id"], order["id"], 201, view)

    async def _view(self, tx: Tx, order_id: str) -> dict[str, Any] | None:
        order = await self.orders.get(order_id, tx)
        if order is None:
            return None
        return _order_view(order, await self.orders.timeline(order_id, tx))

    async def cancel(self, order_id: str, *, user_id: str) -> dict[str, Any] | None:
        """Cancel the customer's order before shipping (refund, restock); None when it is not theirs.

        The cancellation runs at once within the checkout budget and is finished by the recovery loop if a
        service does not answer; the order says CANCELLED once the money and the stock are back.
        """
        found, accepted = await self.orders.request_cancel(order_id, user_id, "Cancelled at your request.")
        if found is None:
            return None
        if not accepted:
            raise domain.OrderStateError(
                f"Order {order_id} is {found['status']}"
                + (" and already being cancelled" if found["cancel_requested"] else "")
                + "; only an order awaiting payment or confirmed and not shipped yet can be cancelled."
            )
        await asyncio.wait({self.saga.start(order_id)}, timeout=self.checkout_budget)
        return await self.view(order_id)

    async def mark(
        self, order_id: str, to: Status, *, carrier: str | None = None, tracking_number: str | None = None
    ) -> dict[str, Any] | None:
        """An admin marks an order shipped (with carrier and tracking number) or delivered; None: no such order."""
        order = await self.orders.get(order_id)
        if order is None:
            return None
        source = domain.ADMIN_TRANSITIONS[to]
        async with self.orders.db.transaction() as tx:
            if to is Status.SHIPPED:
                assert carrier is not None and tracking_number is not None
                moved = await self.orders.move(
                    tx,
                    order_id,
                    to=to,
                    source=source,
                    note=f"Shipped with {carrier}, tracking number {tracking_number}",
                    carrier=carrier,
                    tracking_number=tracking_number,
                )
                event: OrderShipped | OrderDelivered = OrderShipped(
                    order_id=order_id, user_id=order["user_id"], email=order["email"] or "",
                    name=order["customer_name"] or "", carrier=carrier, tracking_number=tracking_number,
                )  # fmt: skip
            else:
                moved = await self.orders.move(tx, order_id, to=to, source=source, note="Delivered")
                event = OrderDelivered(
                    order_id=order_id, user_id=order["user_id"], email=order["email"] or "",
                    name=order["customer_name"] or "",
                )  # fmt: skip
            if moved:
                await self.outbox.add(tx, event)
        if not moved:
            raise domain.OrderStateError(
                f"Order {order_id} is {order['status']}; only a {source.value} order can be marked {to.value}."
            )
        return await self.view(order_id)

    async def view(self, order_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        order = await self.orders.get(order_id)
        if order is None or (user_id is not None and order["user_id"] != user_id):
            return None
        return _order_view(order, await self.orders.timeline(order_id))

    async def list_for(self, user_id: str, *, page: int, limit: int) -> dict[str, Any]:
        rows, total = await self.orders.newest_first(user_id=user_id, limit=limit, offset=(page - 1) * limit)
        return {"items": [_order_view(row, []) for row in rows], "page": page, "limit": limit, "total": total}

    async def list_all(self, *, status: Status | None, page: int, limit: int) -> dict[str, Any]:
        """An admin's list: every customer's orders (in ``status`` only, when given), newest first, as summaries."""
        rows, total = await self.orders.newest_first(status=status, limit=limit, offset=(page - 1) * limit)
        return {"items": [_summary_view(row) for row in rows], "page": page, "limit": limit, "total": total}


def _order_view(order: Row, timeline: list[Row]) -> dict[str, Any]:
    lines = lines_from_json(order["lines"])
    waiting = order["status"] == Status.AWAITING_PAYMENT and not order["compensating"]
    shipped = order["carrier"] is not None
    return {
        "id": order["id"],
        "status": order["status"],
        "reason": order["reason"] if order["status"] not in IN_PROGRESS else None,
        "next_action": json.loads(order["next_action"]) if waiting and order["next_action"] else None,
        "action_deadline": order["action_deadline"] if waiting else None,
        "cancellation_pending": bool(order["cancel_requested"]),
        "refunded": order["refunded"],
        "shipment": {"carrier": order["carrier"], "tracking_number": order["tracking_number"]} if shipped else None,
        "lines": [{**asdict(line), "line_total": line.total} for line in lines],
        "total": order["total"],
        "currency": order["currency"],
        "shipping_address": json.loads(order["shipping_address"]),
        "payment_method_id": order["payment_method_id"],
        "created_at": order["created_at"],
        "updated_at": order["updated_at"],
        "timeline": [{"at": row["at"], "status": row["status"], "note": row["note"]} for row in timeline],
    }


def _summary_view(order: Row) -> dict[str, Any]:
    """An order in an admin's list: who, what state, how much; the lines themselves only counted."""
    return {
        "id": order["id"],
        "user_id": order["user_id"],
        "status": order["status"],
        "cancellation_pending": bool(order["cancel_requested"]),
        "total": order["total"],
        "currency": order["currency"],
        "line_count": len(json.loads(order["lines"])),
        "created_at": order["created_at"],
        "updated_at": order["updated_at"],
    }


def _cart_view(rows: list[Row], current: dict[str, Product]) -> dict[str, Any]:
    """The cart as the customer sees it: each line at today's price, flagged when that changed or is gone."""
    lines = []
    for row in rows:
        product = current.get(row["sku"])
        price = product.price if product else row["unit_price"]
        lines.append(
            {
                "sku": row["sku"],
                "name": product.name if product else row["sku"],
                "quantity": row["quantity"],
                "unit_price": price,
                "currency": row["currency"],
                "line_total": price * row["quantity"],
                "available": product is not None,
                "price_changed": product is not None and price != row["unit_price"],
                "previous_price": row["unit_price"] if product is not None and price != row["unit_price"] else None,
            }
        )
    total = sum(line["line_total"] for line in lines if line["available"])
    currency = lines[0]["currency"] if lines else None
    return {"lines": lines, "total": total, "currency": currency}

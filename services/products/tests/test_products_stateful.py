"""A hypothesis state machine over reserve, commit, release, expire and restock: after every step the stock
matches a plain model and on_hand + reserved + sold == received holds (SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from microshop_kit.testing import running_app
from microshop_products import ProductsSettings, create_app, domain
from microshop_products.domain import Line
from microshop_products.handlers import CatalogAdmin, Inventory
from microshop_products.seed import seed_catalog
from microshop_products.testing import check_stock_invariants

STOCK = {"A": 5, "B": 3}
CATALOG: dict[str, Any] = {
    "currency": "EUR",
    "categories": [{"slug": "c", "name": "C", "parent": None}],
    "products": [
        {"sku": sku, "category": "c", "name": sku, "price": 1, "description": "", "stock": units}
        for sku, units in STOCK.items()
    ],
}
ORDERS = st.sampled_from([f"o{i}" for i in range(6)])  # few ids: replays and late calls happen often
SKUS = st.sampled_from(sorted(STOCK))
#: Statuses that hold sold units (or did), and statuses after which the order id takes no new reservation.
SOLD = (domain.ReservationStatus.COMMITTED, domain.ReservationStatus.RETURNED)
ENDED = (domain.ReservationStatus.RELEASED, domain.ReservationStatus.RETURNED)


class InventoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.tmp = tempfile.TemporaryDirectory()
        app = create_app(ProductsSettings(data_dir=Path(self.tmp.name), broker_url=None, sweep_interval_seconds=3600))
        self.run(self.stack.enter_async_context(running_app(app)))
        self.db = app.state.kit.database
        self.run(seed_catalog(self.db, catalog=CATALOG))
        self.inventory: Inventory = app.state.inventory
        self.admin: CatalogAdmin = app.state.admin
        self.on_hand = dict(STOCK)
        self.reserved = dict.fromkeys(STOCK, 0)
        self.sold = dict.fromkeys(STOCK, 0)
        self.orders: dict[str, tuple[domain.ReservationStatus, tuple[Line, ...]]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()
        self.tmp.cleanup()

    def _move(self, lines: tuple[Line, ...], source: dict[str, int], target: dict[str, int]) -> None:
        for line in lines:
            source[line.sku] -= line.quantity
            target[line.sku] += line.quantity

    @rule(order=ORDERS, sku=SKUS, quantity=st.integers(1, 4))
    def reserve(self, order: str, sku: str, quantity: int) -> None:
        lines = (Line(sku, quantity),)
        known = self.orders.get(order)
        try:
            self.run(self.inventory.reserve(order, lines))
        except domain.OutOfStock:
            assert known is None and self.on_hand[sku] < quantity
            return
        except domain.ReservationReleased:
            assert known is not None and known[0] in ENDED
            return
        except domain.ReservationMismatch:
            assert known is not None and known[1] != lines
            return
        if known is None:
            assert self.on_hand[sku] >= quantity
            self._move(lines, self.on_hand, self.reserved)
            self.orders[order] = (domain.ReservationStatus.RESERVED, lines)
        else:
            assert known[0] not in ENDED and known[1] == lines  # a replay

    @rule(order=ORDERS)
    def commit(self, order: str) -> None:
        known = self.orders.get(order)
        try:
            self.run(self.inventory.commit(order))
        except domain.ReservationNotFound:
            assert known is None
            return
        except domain.ReservationReleased:
            assert known is not None and known[0] is domain.ReservationStatus.RELEASED
            return
        assert known is not None and known[0] is not domain.ReservationStatus.RELEASED
        if known[0] is domain.ReservationStatus.RESERVED:
            self._move(known[1], self.reserved, self.sold)
            self.orders[order] = (domain.ReservationStatus.COMMITTED, known[1])

    @rule(order=ORDERS)
    def release(self, order: str) -> None:
        known = self.orders.get(order)
        try:
            self.run(self.inventory.release(order))
        except domain.ReservationCommitted:
            assert known is not None and known[0] in SOLD
            return
        assert known is None or known[0] not in SOLD
        self._released(order, known)

    @rule(order=ORDERS)
    def give_back(self, order: str) -> None:
        """A confirmed order is cancelled: its sold units go back on hand."""
        known = self.orders.get(order)
        try:
            status = self.run(self.inventory.give_back(order))
        except domain.ReservationNotFound:
            assert known is None
            return
        except domain.ReservationNotCommitted:
            assert known is not None and known[0] not in SOLD
            return
        assert known is not None and known[0] in SOLD and status is domain.ReservationStatus.RETURNED
        if known[0] is domain.ReservationStatus.COMMITTED:
            self._move(known[1], self.sold, self.on_hand)
            self.orders[order] = (domain.ReservationStatus.RETURNED, known[1])

    def _released(self, order: str, known: tuple[domain.ReservationStatus, tuple[Line, ...]] | None) -> None:
        if known is not None and known[0] is domain.ReservationStatus.RESERVED:
            self._move(known[1], self.reserved, self.on_hand)
        self.orders[order] = (domain.ReservationStatus.RELEASED, known[1] if known else ())

    @rule(order=ORDERS)
    def expire(self, order: str) -> None:
        """The order's reservation runs out, and the sweeper comes by."""
        self.run(
            self.db.execute(
                "UPDATE reservations SET expires_at = '2000-01-01T00:00:00.000000+00:00' WHERE order_id = :id",
                {"id": order},
            )
        )
        released = self.run(self.inventory.sweep())
        known = self.orders.get(order)
        live = known is not None and known[0] is domain.ReservationStatus.RESERVED
        assert released == int(live)
        if live:
            self._released(order, known)

    @rule(sku=SKUS, units=st.integers(0, 8))
    def restock(self, sku: str, units: int) -> None:
        row = self.run(self.admin.set_stock(sku, units))
        self.on_hand[sku] = units
        assert row["on_hand"] == units

    @invariant()
    def stock_is_conserved_and_matches_the_model(self) -> None:
        self.run(check_stock_invariants(self.db))
        rows = self.run(self.db.fetch("SELECT sku, on_hand, reserved, sold FROM stock ORDER BY sku"))
        actual = {row["sku"]: (row["on_hand"], row["reserved"], row["sold"]) for row in rows}
        assert actual == {sku: (self.on_hand[sku], self.reserved[sku], self.sold[sku]) for sku in STOCK}


InventoryMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_inventory_state_machine = InventoryMachine.TestCase

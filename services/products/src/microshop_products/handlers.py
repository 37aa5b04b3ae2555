"""Use cases of the products service: catalog reads and the reservation life cycle (reserve, commit, release)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from microshop_kit.bus import Outbox
from microshop_kit.cache import ResponseCache
from microshop_kit.db import Database, Row, Tx
from microshop_kit.log import get_logger
from microshop_products import domain
from microshop_products.domain import Line, ProductQuery, Reservation, ReservationStatus
from microshop_products.events import product_created, product_updated, stock_low
from microshop_products.store import CatalogAdminStore, CatalogStore, InventoryStore

log = get_logger("microshop.products")


class ProductNotFound(Exception):
    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        super().__init__(f"Product {product_id} does not exist")


@dataclass(frozen=True)
class ProductPage:
    items: list[Row]
    page: int
    limit: int
    total: int


class Catalog:
    """What shoppers read: products (active only), categories, stock on hand."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    async def products(self, query: ProductQuery) -> ProductPage:
        rows, total = await self.store.list_products(query)
        return ProductPage(rows, query.page, query.limit, total)

    async def product(self, product_id: str) -> Row:
        row = await self.store.product(product_id)
        if row is None or not row["active"]:
            raise ProductNotFound(product_id)
        return row

    async def any_product(self, product_id: str) -> Row:
        """A product whether active or not (what admins see)."""
        row = await self.store.product(product_id)
        if row is None:
            raise ProductNotFound(product_id)
        return row

    async def categories(self) -> list[Row]:
        return await self.store.categories()

    async def by_skus(self, skus: Sequence[str]) -> list[Row]:
        """Every product with one of these SKUs, inactive ones included (callers decide what inactive means)."""
        return await self.store.by_skus(sorted(set(skus)))

    async def availability(self, skus: Sequence[str]) -> dict[str, int]:
        return await self.store.on_hand(sorted(set(skus)))


class CatalogAdmin:
    """What admins change: products and stock on hand. Each change and its event commit together."""

    def __init__(self, db: Database, store: CatalogAdminStore, outbox: Outbox, low_threshold: int) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox
        self.low_threshold = low_threshold

    async def create(self, new: domain.NewProduct) -> str:
        """Add a product with its starting stock; returns its id."""
        product_id = domain.product_id(new.sku)
        now = domain.timestamp()
        async with self.db.transaction() as tx:
            category_id = await self._category_id(tx, new.category)
            values = {
                "id": product_id,
                "sku": new.sku,
                "name": new.name,
                "description": new.description,
                "category_id": category_id,
                "price": new.price,
                "currency": new.currency,
                "image_url": new.image_url or domain.image_path(product_id),
                "active": int(new.active),
                "now": now,
            }
            if not await self.store.insert_product(tx, values):
                raise domain.SkuTaken(new.sku)
            await self.store.insert_stock(tx, new.sku, new.stock, self.low_threshold)
            await self.outbox.add(tx, product_created(product_id, new.sku, new.name, new.price, new.currency))
        return product_id

    async def update(self, product_id: str, changes: dict[str, Any]) -> None:
        """Change the fields given (keys of ``domain.EDITABLE``); a new name or price publishes product.updated.v1."""
        unknown = set(changes) - domain.EDITABLE
        if unknown:
            raise ValueError(f"Not editable: {sorted(unknown)}")
        async with self.db.transaction() as tx:
            before = await self.store.locked_product(tx, product_id)
            if before is None:
                raise ProductNotFound(product_id)
            values = dict(changes)
            if "category" in values:
                values["category_id"] = await self._category_id(tx, values.pop("category"))
            if "active" in values:
                values["active"] = int(values["active"])
            await self.store.update_product(tx, product_id, values, domain.timestamp())
            if domain.announced(dict(before), values):
                after = {**dict(before), **values}
                event = product_updated(product_id, after["sku"], after["name"], after["price"], after["currency"])
                await self.outbox.add(tx, event)

    async def set_stock(self, sku: str, on_hand: int) -> Row:
        """Receive or write off units so that ``on_hand`` are on hand; reserved and sold stay as they are."""
        async with self.db.transaction() as tx:
            row = await self.store.set_on_hand(tx, sku, on_hand)
            if row is None:
                raise domain.UnknownSku(sku)
        return row

    async def _category_id(self, tx: Tx, slug: str) -> str:
        category_id = await self.store.category_id(tx, slug)
        if category_id is None:
            raise domain.UnknownCategory(slug)
        return category_id


class Inventory:
    """Reservations keyed by order id: each call is idempotent, so the orders saga may retry any step."""

    def __init__(self, db: Database, store: InventoryStore, outbox: Outbox, ttl_seconds: float) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox
        self.ttl_seconds = ttl_seconds

    async def reserve(self, order_id: str, lines: Iterable[Line]) -> Reservation:
        """Reserve every line or none, in one transaction; the same order id again replays the first answer."""
        wanted = domain.normalise_lines(lines)
        now = datetime.now(UTC)
        expires_at = domain.expiry(self.ttl_seconds, now)
        async with self.db.transaction() as tx:
            if not await self.store.claim(tx, order_id, domain.timestamp(now), expires_at):
                existing = await self.store.reservation(tx, order_id)
                assert existing is not None  # claim found the row and nothing deletes reservations
                return domain.replay(existing, wanted)
            short: list[str] = []
            for line in wanted:
                row = await self.store.take(tx, line)
                if row is None:
                    short.append(line.sku)  # keep going: the answer names every short SKU
                elif domain.crossed_low(row["on_hand"], line.quantity, row["low_threshold"]):
                    await self._stock_low(tx, line.sku, row["on_hand"], row["low_threshold"])
            if short:
                raise domain.OutOfStock(short)  # rolls back the claim and every line taken so far
            await self.store.add_lines(tx, order_id, wanted)
        return Reservation(order_id, ReservationStatus.RESERVED, expires_at, wanted)

    async def commit(self, order_id: str) -> ReservationStatus:
        """Reserved units become sold; committing again gives the same answer. A reservation past its expiry
        still commits until the sweeper has released it (the units are still held for it)."""
        status = await self._settle(order_id, ReservationStatus.COMMITTED)
        if status is None:
            raise domain.ReservationNotFound(order_id)
        if status is ReservationStatus.RELEASED:
            raise domain.ReservationReleased(order_id)
        return status

    async def release(self, order_id: str) -> ReservationStatus:
        """Reserved units go back on hand. An order never reserved gets a released tombstone, so a reservation
        arriving late (a retry overtaken by the saga's compensation) is refused."""
        status = await self._settle(order_id, ReservationStatus.RELEASED)
        if status in (ReservationStatus.COMMITTED, ReservationStatus.RETURNED):
            raise domain.ReservationCommitted(order_id)
        return ReservationStatus.RELEASED

    async def give_back(self, order_id: str) -> ReservationStatus:
        """Sold units of a committed order go back on hand (a confirmed order cancelled before shipping); giving
        back again gives the same answer. Conservation holds: sold falls by what on hand gains."""
        async with self.db.transaction() as tx:
            status = await self.store.locked_status(tx, order_id)
            if status is None:
                raise domain.ReservationNotFound(order_id)
            if status is ReservationStatus.RETURNED:
                return status
            if status is not ReservationStatus.COMMITTED:
                raise domain.ReservationNotCommitted(order_id, status)
            if not await self.store.mark_returned(tx, order_id, domain.timestamp()):
                raise RuntimeError(f"The committed reservation of order {order_id} changed under its lock")
            for line in await self.store.lines(tx, order_id):
                await self.store.give_back(tx, line)
        return ReservationStatus.RETURNED

    async def _settle(self, order_id: str, to: ReservationStatus) -> ReservationStatus | None:
        """Move the order's reservation from reserved to ``to``; returns the status it ends in (None: no such
        order, which a release turns into a tombstone)."""
        move = self.store.sell if to is ReservationStatus.COMMITTED else self.store.put_back
        for _ in range(3):
            async with self.db.transaction() as tx:
                now = domain.timestamp()
                # Locked (FOR UPDATE on PostgreSQL; SQLite's write transaction holds the lock): the status
                # read is the status changed, with no other change in between.
                status = await self.store.locked_status(tx, order_id)
                if status is ReservationStatus.RESERVED:
                    if not await self.store.transition(tx, order_id, to, now):
                        continue  # cannot happen under the lock; never move stock twice if it did
                    for line in await self.store.lines(tx, order_id):
                        await move(tx, line)
                    return to
                if status is not None or to is ReservationStatus.COMMITTED:
                    return status
                if await self.store.tombstone(tx, order_id, now):
                    return to
            # Here a reservation of this order id, uncommitted when we read, took the tombstone's key: look again.
        raise RuntimeError(f"Settling order {order_id} kept racing with its reservation")

    async def sweep(self, batch: int = 100) -> int:
        """Release reservations past their expiry (an order that never came back); returns how many."""
        now = domain.timestamp()
        released = 0
        for order_id in await self.store.expired(now, batch):
            async with self.db.transaction() as tx:
                # The status and expiry are checked again here: the order may have committed meanwhile.
                if await self.store.transition(tx, order_id, ReservationStatus.RELEASED, now, expired_before=now):
                    for line in await self.store.lines(tx, order_id):
                        await self.store.put_back(tx, line)
                    released += 1
        if released:
            log.info("expired reservations released", count=released)
        return released

    async def _stock_low(self, tx: Tx, sku: str, on_hand: int, threshold: int) -> None:
        await self.outbox.add(tx, stock_low(sku, on_hand, threshold))


async def sweeper(inventory: Inventory, interval: float, batch: int, cache: ResponseCache | None = None) -> None:
    """Background loop of the service: release expired reservations every ``interval`` seconds (and forget
    kept catalog answers that showed the stock they held)."""
    while True:
        await asyncio.sleep(interval)
        try:
            if await inventory.sweep(batch) and cache is not None:
                cache.clear()
        except Exception:  # the outermost loop: log it, and try again next round
            log.exception("sweeping expired reservations failed")

"""Catalog and inventory rules of the products service: plain Python, no I/O."""

from __future__ import annotations

import enum
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Product and category ids are uuid5 of their natural key, so a re-seed (or a second instance) agrees on them.
_ID_NAMESPACE = uuid.UUID("6f1c2f4e-3a9b-5d7e-8c01-5b2a9d4e7f10")


def product_id(sku: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"product:{sku}"))


def category_id(slug: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"category:{slug}"))


def image_path(product: str) -> str:
    """Relative, so the same URL works on the service itself and through the gateway."""
    return f"/api/v1/products/{product}/image.svg"


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with a fixed width, so stored timestamps compare correctly as text."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def expiry(ttl_seconds: float, now: datetime | None = None) -> str:
    return timestamp((now or datetime.now(UTC)) + timedelta(seconds=ttl_seconds))


# ------------------------------------------------------------------------------------------------- catalog


class Sort(enum.StrEnum):
    NAME = "name"
    PRICE = "price"
    PRICE_DESC = "-price"
    NEWEST = "newest"


@dataclass(frozen=True)
class ProductQuery:
    """What a catalog listing asks for; every field optional except paging."""

    category: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    q: str | None = None
    sort: Sort = Sort.NAME
    page: int = 1
    limit: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


# ----------------------------------------------------------------------------------------------- inventory


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"


@dataclass(frozen=True, order=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReservationStatus
    expires_at: str
    lines: tuple[Line, ...]


class InventoryError(Exception):
    """Base of the inventory rules' refusals; api.py maps each to one problem type."""


class OutOfStock(InventoryError):
    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = sorted(set(skus))
        super().__init__(f"Not enough stock for {', '.join(self.skus)}")


class ReservationReleased(InventoryError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"The reservation of order {order_id} was released; it cannot be reserved or committed")


class ReservationCommitted(InventoryError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"The reservation of order {order_id} is committed (sold); it cannot be released")


class ReservationNotFound(InventoryError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"Order {order_id} has no reservation")


class ReservationMismatch(InventoryError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"Order {order_id} was already reserved with different lines")


class DuplicateSku(InventoryError):
    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"SKU {sku} appears more than once; send one line per SKU")


def normalise_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """Lines sorted by SKU: a fixed lock order (no deadlock between two orders on PostgreSQL) and a
    canonical form to compare a replayed request with the first one."""
    ordered = tuple(sorted(lines))
    for before, after in itertools.pairwise(ordered):
        if before.sku == after.sku:
            raise DuplicateSku(after.sku)
    return ordered


def replay(existing: Reservation, lines: tuple[Line, ...]) -> Reservation:
    """The answer to a reservation request for an order id seen before: the first answer, or a refusal."""
    if existing.status is ReservationStatus.RELEASED:
        raise ReservationReleased(existing.order_id)
    if existing.lines != lines:
        raise ReservationMismatch(existing.order_id)
    return Reservation(existing.order_id, ReservationStatus.RESERVED, existing.expires_at, existing.lines)


def crossed_low(on_hand_after: int, taken: int, threshold: int) -> bool:
    """True when this change took on-hand stock from at or above the threshold to below it (one alert per
    crossing, not one per reservation while it stays low)."""
    return on_hand_after < threshold <= on_hand_after + taken

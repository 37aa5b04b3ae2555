"""Catalog and inventory rules of the products service: plain Python, no I/O."""

from __future__ import annotations

import enum
import itertools
import re
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
    #: Best match first; only meaningful with a search (without one it lists by name).
    RELEVANCE = "relevance"


#: Search input is cut to this many characters and words before it reaches SQL (bounded work per query).
MAX_SEARCH_CHARS = 200
MAX_SEARCH_TERMS = 10
_WORD = re.compile(r"[^\W_]+")  # runs of unicode letters and digits: no operator or quote survives


def search_terms(text: str) -> tuple[str, ...]:
    """The words of a search, lower-cased, duplicates dropped; () when it holds no letter or digit."""
    words: dict[str, None] = {}
    for match in _WORD.finditer(text[:MAX_SEARCH_CHARS].lower()):
        words.setdefault(match.group(), None)
        if len(words) == MAX_SEARCH_TERMS:
            break
    return tuple(words)


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
    def terms(self) -> tuple[str, ...]:
        return search_terms(self.q) if self.q else ()

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


@dataclass(frozen=True)
class NewProduct:
    """What an admin sends to add a product (its id is derived from the SKU, like the seed's)."""

    sku: str
    name: str
    description: str
    category: str  # slug
    price: int
    currency: str
    image_url: str | None = None  # None: the picture the service draws
    active: bool = True
    stock: int = 0


#: Columns an admin may change on a product (``category`` is a slug, stored as its id).
EDITABLE = frozenset({"name", "description", "price", "category", "active", "image_url"})
#: Changes that other services care about (orders prices carts with them): they publish product.updated.v1.
ANNOUNCED = frozenset({"name", "price"})


class CatalogError(Exception):
    """Base of the catalog administration's refusals; api.py maps each to one problem type."""


class SkuTaken(CatalogError):
    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"A product with SKU {sku} exists already")


class UnknownCategory(CatalogError):
    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(f"Category {slug} does not exist")


class UnknownSku(CatalogError):
    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"No product has SKU {sku}")


def announced(before: dict[str, object], changes: dict[str, object]) -> bool:
    """True when a change alters a field other services keep a copy of (name or price)."""
    return any(key in changes and changes[key] != before[key] for key in ANNOUNCED)


# ----------------------------------------------------------------------------------------------- inventory


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    #: Committed (sold), then given back: a confirmed order cancelled before shipping.
    RETURNED = "returned"


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


class ReservationNotCommitted(InventoryError):
    def __init__(self, order_id: str, status: ReservationStatus) -> None:
        self.order_id = order_id
        super().__init__(f"The reservation of order {order_id} is {status.value}, not committed: nothing was sold")


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
    if existing.status in (ReservationStatus.RELEASED, ReservationStatus.RETURNED):
        raise ReservationReleased(existing.order_id)
    if existing.lines != lines:
        raise ReservationMismatch(existing.order_id)
    return Reservation(existing.order_id, ReservationStatus.RESERVED, existing.expires_at, existing.lines)


def crossed_low(on_hand_after: int, taken: int, threshold: int) -> bool:
    """True when this change took on-hand stock from at or above the threshold to below it (one alert per
    crossing, not one per reservation while it stays low)."""
    return on_hand_after < threshold <= on_hand_after + taken

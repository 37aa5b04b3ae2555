"""What the storefront shows, without I/O: products, carts, orders and messages as pages see them, money."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: ISO 4217 currencies without minor units (amounts are already whole units).
ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
LOW_STOCK = 5

Text = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)]


def format_money(amount: int, currency: str) -> str:
    """``1999, "EUR"`` -> ``€19.99``; a currency without a symbol here is written after the amount."""
    currency = currency.upper()
    exponent = 0 if currency in ZERO_DECIMAL else 2
    value = Decimal(amount).scaleb(-exponent)
    number = f"{value:,.{exponent}f}"
    symbol = SYMBOLS.get(currency)
    if symbol is None:
        return f"{number} {currency}"
    return f"-{symbol}{number[1:]}" if number.startswith("-") else f"{symbol}{number}"


def safe_image_url(url: str | None) -> str | None:
    """Only a site-relative path or an http(s) URL goes into ``<img src>``; anything else is dropped."""
    if not url:
        return None
    if (url.startswith("/") and not url.startswith("//")) or url.startswith(("https://", "http://")):
        return url
    return None


def parse_amount(text: str, currency: str = "EUR") -> int | None:
    """``"12.50"`` (what a person types in a price filter) -> ``1250`` minor units; None when not a price."""
    cleaned = text.strip().replace(",", ".").lstrip("€$£¥").strip()
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except ArithmeticError:
        return None
    if not value.is_finite() or value < 0 or value > 10_000_000:
        return None
    exponent = 0 if currency.upper() in ZERO_DECIMAL else 2
    return int(value.scaleb(exponent).to_integral_value())


def amount_text(minor: int | None, currency: str = "EUR") -> str:
    """``1250`` -> ``"12.50"``: a price filter's value shown back in its field."""
    if minor is None:
        return ""
    exponent = 0 if currency.upper() in ZERO_DECIMAL else 2
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after signing in: a path on this site only (never ``//host`` or ``https://...``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(char) < 32 for char in target):
        return default
    return target


class Category(BaseModel):
    model_config = ConfigDict(extra="ignore")

    slug: str
    name: str
    product_count: int = 0


class Product(BaseModel):
    """A product as the products API lists it; fields the pages do not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: Text
    name: str
    price: int
    currency: str = Field(default="EUR", min_length=3, max_length=3)
    sku: Text | None = None
    description: str | None = None
    image_url: str | None = None
    category: str | None = None
    #: Units that can be ordered now; ``in_stock`` when the API only says yes or no.
    available: int | None = None
    in_stock: bool | None = None

    @property
    def price_text(self) -> str:
        return format_money(self.price, self.currency)

    @property
    def image(self) -> str | None:
        return safe_image_url(self.image_url)

    @property
    def availability(self) -> tuple[str, str] | None:
        """(css class, label), or None when the API said nothing about stock."""
        if self.available is not None:
            if self.available <= 0:
                return ("out", "Out of stock")
            if self.available <= LOW_STOCK:
                return ("low", f"Only {self.available} left")
            return ("in", "In stock")
        if self.in_stock is not None:
            return ("in", "In stock") if self.in_stock else ("out", "Out of stock")
        return None


@dataclass(frozen=True)
class ProductPage:
    """One page of the catalog."""

    items: list[Product]
    page: int
    limit: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.limit)) if self.limit > 0 else 1

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @classmethod
    def from_api(cls, body: Any, page: int, limit: int) -> ProductPage:
        """From ``{"items", "page", "limit", "total"}``; raises ``ValueError`` on another shape."""
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ValueError("a product list must be an object with an 'items' list")
        items = [Product.model_validate(item) for item in body["items"]]
        return cls(
            items=items,
            page=int(body.get("page", page)),
            limit=int(body.get("limit", limit)) or limit,
            total=int(body.get("total", len(items))),
        )


class Message(BaseModel):
    """An email the local mail sink received."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Text
    sender: str = Field(default="", alias="from")
    to: str | list[str] = ""
    subject: str = ""
    date: str = ""
    text: str | None = None
    html: str | None = None

    @property
    def recipients(self) -> str:
        return ", ".join(self.to) if isinstance(self.to, list) else self.to


# ------------------------------------------------------------------------------------------ cart and orders

#: The simulated payment provider's test cards, listed on the checkout page (Stripe's numbers).
TEST_CARDS: tuple[tuple[str, str], ...] = (
    ("4242 4242 4242 4242", "succeeds"),
    ("4000 0027 6000 3184", "asks for 3-D Secure approval"),
    ("4000 0000 0000 0002", "is declined"),
    ("4000 0000 0000 9995", "has insufficient funds"),
    ("4000 0000 0000 0069", "is expired"),
    ("4000 0000 0000 0127", "has an incorrect CVC"),
)

STATUS_LABELS = {
    "PENDING": "Processing",
    "AWAITING_PAYMENT": "Waiting for your payment approval",
    "CONFIRMED": "Confirmed",
    "REJECTED": "Not completed",
    "CANCELLED": "Cancelled",
    "SHIPPED": "Shipped",
    "DELIVERED": "Delivered",
}
#: Statuses a page shows as still moving: it reloads itself until they change.
SETTLING = frozenset({"PENDING"})
MAX_QUANTITY = 99
MAX_CART_LINES = 50


class CartLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str
    name: str
    quantity: int
    unit_price: int
    currency: str = "EUR"
    line_total: int
    available: bool = True
    price_changed: bool = False
    previous_price: int | None = None
    product_id: str | None = None

    @property
    def unit_price_text(self) -> str:
        return format_money(self.unit_price, self.currency)

    @property
    def line_total_text(self) -> str:
        return format_money(self.line_total, self.currency)

    @property
    def previous_price_text(self) -> str | None:
        return None if self.previous_price is None else format_money(self.previous_price, self.currency)


class Cart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lines: list[CartLine] = []
    total: int = 0
    currency: str | None = None

    @property
    def count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def total_text(self) -> str:
        return format_money(self.total, self.currency or "EUR")

    @property
    def price_changes(self) -> list[CartLine]:
        return [line for line in self.lines if line.price_changed]

    def quantities(self) -> dict[str, int]:
        return {line.sku: line.quantity for line in self.lines}


def merged_quantities(current: dict[str, int], sku: str, add: int) -> dict[str, int]:
    """The cart's quantities with ``add`` more of ``sku``, capped at what one line may hold."""
    result = dict(current)
    result[sku] = min(MAX_QUANTITY, result.get(sku, 0) + add)
    return result


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str
    name: str
    quantity: int
    unit_price: int
    currency: str = "EUR"
    line_total: int

    @property
    def unit_price_text(self) -> str:
        return format_money(self.unit_price, self.currency)

    @property
    def line_total_text(self) -> str:
        return format_money(self.line_total, self.currency)


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    at: str
    status: str
    note: str | None = None

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status.title())


class Shipment(BaseModel):
    carrier: str
    tracking_number: str


class Order(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    reason: str | None = None
    next_action: dict[str, Any] | None = None
    cancellation_pending: bool = False
    refunded: int = 0
    shipment: Shipment | None = None
    lines: list[OrderLine] = []
    total: int
    currency: str = "EUR"
    shipping_address: dict[str, str | None] = {}
    created_at: str = ""
    timeline: list[TimelineEntry] = []

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status.title())

    @property
    def total_text(self) -> str:
        return format_money(self.total, self.currency)

    @property
    def refunded_text(self) -> str:
        return format_money(self.refunded, self.currency)

    @property
    def can_cancel(self) -> bool:
        return not self.cancellation_pending and self.status in ("AWAITING_PAYMENT", "CONFIRMED")

    @property
    def settling(self) -> bool:
        return self.status in SETTLING or self.cancellation_pending

    @property
    def payment_url(self) -> str | None:
        """The approve/deny page of a payment waiting for the customer (a path on this site only)."""
        url = (self.next_action or {}).get("url") if self.status == "AWAITING_PAYMENT" else None
        return url if isinstance(url, str) and url.startswith("/pay/") else None

    @property
    def short_id(self) -> str:
        return self.id[:8].upper()


@dataclass(frozen=True)
class OrderList:
    items: list[Order]
    page: int
    pages: int


def status_name(status: str) -> str:
    """A status as an admin reads it (``AWAITING_PAYMENT`` -> ``Awaiting payment``), not the customer's wording."""
    return status.replace("_", " ").capitalize()


class OrderSummary(BaseModel):
    """An order in the admin's list of every customer's orders (the whole order is one click away)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    user_id: str
    status: str
    cancellation_pending: bool = False
    total: int
    currency: str = "EUR"
    line_count: int
    created_at: str = ""
    updated_at: str = ""

    @property
    def status_name(self) -> str:
        return status_name(self.status)

    @property
    def total_text(self) -> str:
        return format_money(self.total, self.currency)

    @property
    def short_id(self) -> str:
        return self.id[:8].upper()


@dataclass(frozen=True)
class OrderSummaryList:
    items: list[OrderSummary]
    page: int
    pages: int
    total: int


class Address(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    name: str
    line1: str
    line2: str | None = None
    city: str
    postal_code: str
    country: str
    is_default: bool = False

    def shipping(self) -> dict[str, str]:
        """The order API's ``shipping_address`` (no id, no flags, no empty optional line)."""
        body = {"name": self.name, "line1": self.line1, "city": self.city}
        if self.line2:
            body["line2"] = self.line2
        body.update(postal_code=self.postal_code, country=self.country)
        return body

    @property
    def one_line(self) -> str:
        parts = [self.name, self.line1, self.line2, f"{self.postal_code} {self.city}", self.country]
        return ", ".join(part for part in parts if part)


class Payment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    order_id: str
    status: str
    amount: int
    currency: str = "EUR"
    method: dict[str, Any] = {}
    code: str | None = None

    @property
    def amount_text(self) -> str:
        return format_money(self.amount, self.currency)

    @property
    def method_text(self) -> str:
        if self.method.get("type") == "paypal":
            return "PayPal"
        brand = str(self.method.get("brand") or "Card").title()
        last4 = self.method.get("last4")
        return f"{brand} ending in {last4}" if last4 else brand

"""What the storefront shows, without I/O: products and messages as pages see them, money, pagination."""

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


class Category(BaseModel):
    model_config = ConfigDict(extra="ignore")

    slug: str
    name: str


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

"""Order rules with no I/O: saga steps, totals, price changes, and the reasons a customer reads."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Status(enum.StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class Step(enum.StrEnum):
    """The last saga step that completed; the saga resumes from the next one."""

    STARTED = "started"
    USER_VALIDATED = "user_validated"
    RESERVED = "reserved"
    CHARGED = "charged"
    COMMITTED = "committed"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price: int
    currency: str

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class PriceChange:
    sku: str
    old_price: int
    new_price: int


class OrderError(Exception):
    """A rule of ordering was broken; the message is for the customer."""


class EmptyCart(OrderError):
    pass


class MixedCurrencies(OrderError):
    pass


class PricesChanged(OrderError):
    def __init__(self, changes: list[PriceChange]) -> None:
        super().__init__("Prices changed since the items were put in the cart: " + ", ".join(c.sku for c in changes))
        self.changes = changes


class UnknownProducts(OrderError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__("These products are not available: " + ", ".join(skus))
        self.skus = skus


def total_of(lines: Iterable[Line]) -> tuple[int, str]:
    """The order total and its single currency."""
    lines = list(lines)
    if not lines:
        raise EmptyCart("The cart is empty.")
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        raise MixedCurrencies("An order is paid in one currency; the cart mixes " + ", ".join(sorted(currencies)))
    return sum(line.total for line in lines), currencies.pop()


def price_changes(seen: Mapping[str, int], current: Mapping[str, int]) -> list[PriceChange]:
    """Lines whose current price differs from the price the customer saw."""
    return [
        PriceChange(sku, old, current[sku])
        for sku, old in sorted(seen.items())
        if sku in current and current[sku] != old
    ]


DECLINE_REASONS = {
    "card_declined": "Your card was declined. Please use another card or payment method.",
    "insufficient_funds": "Your card has insufficient funds. Please use another card or payment method.",
    "expired_card": "Your card has expired. Please use another card.",
}


def decline_reason(code: str | None) -> str:
    return DECLINE_REASONS.get(code or "", "Your payment was declined. Please use another payment method.")


def out_of_stock_reason(skus: Iterable[str]) -> str:
    return "Not enough stock for: " + ", ".join(skus) + ". Your card was not charged."

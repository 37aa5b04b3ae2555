"""Order rules with no I/O: saga steps, totals, price changes, and the reasons a customer reads."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Status(enum.StrEnum):
    PENDING = "PENDING"
    #: The payment needs the customer (3-D Secure, PayPal approval): the order carries ``next_action``.
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"


#: Statuses a saga runner still drives (the recovery loop picks them up).
IN_PROGRESS = frozenset({Status.PENDING, Status.AWAITING_PAYMENT})


class Step(enum.StrEnum):
    """The last saga step that completed; the saga resumes from the next one."""

    STARTED = "started"
    USER_VALIDATED = "user_validated"
    RESERVED = "reserved"
    #: The payment waits for the customer's approval (3-D Secure, PayPal); the order is AWAITING_PAYMENT.
    PAYMENT_ACTION = "payment_action"
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
    "incorrect_cvc": "Your card's security code (CVC) is incorrect. Please check it or use another card.",
    "processing_error": "The payment provider could not process your payment. You were not charged; please try "
    "again later.",
    "authentication_failed": "The payment was not approved (3-D Secure check or PayPal approval). You were not "
    "charged.",
    "payment_denied": "The payment was not approved. You were not charged.",
    "payment_not_completed": "The payment was not completed in time, so the order was cancelled. You were not charged.",
}


def decline_reason(code: str | None) -> str:
    return DECLINE_REASONS.get(code or "", "Your payment was declined. Please use another payment method.")


class OrderStateError(OrderError):
    """The order is not in a state that allows this action."""


def can_cancel(status: Status, cancel_requested: bool) -> bool:
    """A customer may cancel before shipping: while the payment waits for them, or once confirmed."""
    return not cancel_requested and status in (Status.AWAITING_PAYMENT, Status.CONFIRMED)


#: The status an admin moves an order to, from the one it must be in.
ADMIN_TRANSITIONS = {Status.SHIPPED: Status.CONFIRMED, Status.DELIVERED: Status.SHIPPED}


def out_of_stock_reason(skus: Iterable[str]) -> str:
    return "Not enough stock for: " + ", ".join(skus) + ". Your card was not charged."

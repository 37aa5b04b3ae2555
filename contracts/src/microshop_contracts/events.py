"""The events services publish, one pydantic model per versioned wire name; the only copy of each schema.

A change to an event is additive (a new optional field) or gets a new wire name (``...v2``). Consumers ignore
fields they do not know, so a producer can add one before its consumers are upgraded.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: An amount of money in integer minor units (cents), never a float.
Money = Annotated[int, Field(ge=0)]
#: An ISO 4217 currency code.
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Event(BaseModel):
    """Base of every published event; ``TYPE`` is the explicit wire name (never derived from the class name)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[str]


class UserRegistered(Event):
    TYPE: ClassVar[str] = "user.registered.v1"

    user_id: str
    email: str
    name: str


class UserContactChanged(Event):
    """A user's contact details or notification choices changed (profile update)."""

    TYPE: ClassVar[str] = "user.contact_changed.v1"

    user_id: str
    email: str
    name: str
    #: E.164, or None when the user has no phone number.
    phone: str | None = None
    email_marketing: bool = False
    sms_order_updates: bool = False


class UserDeleted(Event):
    TYPE: ClassVar[str] = "user.deleted.v1"

    user_id: str


class OrderLine(BaseModel):
    """One line of an order (a part of an event, not an event)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: str
    name: str
    quantity: Annotated[int, Field(ge=1)]
    unit_price: Money


class OrderConfirmed(Event):
    TYPE: ClassVar[str] = "order.confirmed.v1"

    order_id: str
    user_id: str
    email: str
    name: str
    lines: list[OrderLine]
    total: Money
    currency: Currency
    shipping_address: dict[str, str]


class OrderRejected(Event):
    TYPE: ClassVar[str] = "order.rejected.v1"

    order_id: str
    user_id: str
    email: str
    name: str
    reason: str


class OrderCancelled(Event):
    TYPE: ClassVar[str] = "order.cancelled.v1"

    order_id: str
    user_id: str
    email: str
    name: str
    #: What was refunded to the customer (0 when nothing had been charged).
    refunded: Money
    currency: Currency
    reason: str = ""


class OrderShipped(Event):
    TYPE: ClassVar[str] = "order.shipped.v1"

    order_id: str
    user_id: str
    email: str
    name: str
    carrier: str
    tracking_number: str


class OrderDelivered(Event):
    TYPE: ClassVar[str] = "order.delivered.v1"

    order_id: str
    user_id: str
    email: str
    name: str


class PaymentCaptured(Event):
    TYPE: ClassVar[str] = "payment.captured.v1"

    payment_id: str
    order_id: str
    amount: Money
    currency: Currency
    method: str
    user_id: str | None = None


class PaymentFailed(Event):
    TYPE: ClassVar[str] = "payment.failed.v1"

    payment_id: str
    order_id: str
    amount: Money
    currency: Currency
    #: A machine-readable decline code (``card_declined``, ``insufficient_funds``, ``expired_card`` ...).
    code: str
    user_id: str | None = None


class ProductCreated(Event):
    TYPE: ClassVar[str] = "product.created.v1"

    product_id: str
    sku: str
    name: str
    price: Money
    currency: Currency


class ProductUpdated(Event):
    TYPE: ClassVar[str] = "product.updated.v1"

    product_id: str
    sku: str
    name: str
    price: Money
    currency: Currency


class StockLow(Event):
    TYPE: ClassVar[str] = "stock.low.v1"

    sku: str
    available: int
    threshold: int


class PaymentRefunded(Event):
    TYPE: ClassVar[str] = "payment.refunded.v1"

    payment_id: str
    order_id: str
    amount: Money
    currency: Currency
    #: Optional (additive): whose money it was, for a notification.
    user_id: str | None = None


ALL_EVENTS: tuple[type[Event], ...] = (
    UserRegistered,
    UserContactChanged,
    UserDeleted,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
    ProductCreated,
    ProductUpdated,
    StockLow,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
)

#: Every event model by its wire name.
EVENT_TYPES: dict[str, type[Event]] = {event.TYPE: event for event in ALL_EVENTS}


def event_model(type_: str) -> type[Event]:
    """The model for a wire name; KeyError naming it when no contract has that name."""
    try:
        return EVENT_TYPES[type_]
    except KeyError:
        raise KeyError(f"No event contract is named {type_!r}; known: {sorted(EVENT_TYPES)}") from None

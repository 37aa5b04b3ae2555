"""microshop's published contracts: the event envelope and one versioned schema per event."""

from microshop_contracts.envelope import Envelope
from microshop_contracts.events import (
    ALL_EVENTS,
    EVENT_TYPES,
    Currency,
    Event,
    Money,
    OrderConfirmed,
    OrderLine,
    OrderRejected,
    PaymentRefunded,
    ProductCreated,
    ProductUpdated,
    StockLow,
    UserDeleted,
    UserRegistered,
    event_model,
)

__all__ = [
    "ALL_EVENTS",
    "EVENT_TYPES",
    "Currency",
    "Envelope",
    "Event",
    "Money",
    "OrderConfirmed",
    "OrderLine",
    "OrderRejected",
    "PaymentRefunded",
    "ProductCreated",
    "ProductUpdated",
    "StockLow",
    "UserDeleted",
    "UserRegistered",
    "event_model",
]

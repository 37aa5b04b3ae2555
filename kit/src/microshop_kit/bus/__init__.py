"""The event bus: transactional outbox, relay, inbox consumer, over NATS JetStream or RabbitMQ.

Services use ``EventBus`` (built by the app factory) and ``Outbox.add``; handlers have the ``Handler`` shape.
"""

from microshop_kit.bus.broker import Broker, Delivery, broker_for
from microshop_kit.bus.consumer import Handler, InboxConsumer, RetryPolicy
from microshop_kit.bus.eventbus import BusOptions, EventBus
from microshop_kit.bus.outbox import Outbox, Relay

__all__ = [
    "Broker",
    "BusOptions",
    "Delivery",
    "EventBus",
    "Handler",
    "InboxConsumer",
    "Outbox",
    "Relay",
    "RetryPolicy",
    "broker_for",
]

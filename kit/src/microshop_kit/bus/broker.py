"""What the bus needs from a broker (publish with a dedup id, durable consumers, acks), and the pick by URL."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from microshop_kit.errors import BusError, ConfigError

logger = logging.getLogger("microshop.bus")

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONSUMER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_name(kind: str, value: str) -> str:
    """Namespaces and consumer names become subjects, stream, durable and queue names: keep them plain."""
    pattern = _NAMESPACE if kind == "bus_namespace" else _CONSUMER
    if not pattern.match(value):
        raise ConfigError(f"{kind} {value!r} must be 1-64 letters, digits, '_' or '-'")
    return value


class Delivery(abc.ABC):
    """One message handed to a consumer; exactly one of ack/retry/release settles it."""

    def __init__(self, body: bytes, *, event_type: str, message_id: str | None, deliveries: int) -> None:
        self.body = body
        self.event_type = event_type
        self.message_id = message_id
        #: How many times the broker has delivered it, this one included (1 the first time).
        self.deliveries = deliveries

    @abc.abstractmethod
    async def ack(self) -> None:
        """Done with it: the broker forgets it."""

    @abc.abstractmethod
    async def retry(self, delay: float) -> None:
        """Give it back to be delivered again after ``delay`` seconds."""

    async def release(self) -> None:
        """Give it back at once, untouched (shutting down)."""
        await self.retry(0)


DeliveryHandler = Callable[[Delivery], Awaitable[None]]
#: An event to publish: its type, its body, and the id the broker drops a second copy by.
Outgoing = tuple[str, bytes, str]
BatchSource = Callable[[], Awaitable[Sequence[Delivery]]]


class Broker(abc.ABC):
    """A connection to one broker, namespaced so several platforms can share a server."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = check_name("bus_namespace", namespace)

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect, retrying until it succeeds; afterwards the connection recovers from outages by itself."""

    @abc.abstractmethod
    async def publish(self, event_type: str, body: bytes, *, dedup_id: str) -> None:
        """Publish and wait for the broker to confirm it has the message; BusError when it does not."""

    async def publish_in_order(self, messages: Sequence[Outgoing]) -> tuple[int, BusError | None]:
        """Publish ``messages`` in order; returns how many, counted from the first, the broker confirmed, and the
        error of the first it did not (None when it confirmed them all). Only that first part may be marked
        sent. This one waits for each confirmation before sending the next; an adapter may send them all first
        and then wait (one round trip for the lot)."""
        for index, (event_type, body, dedup_id) in enumerate(messages):
            try:
                await self.publish(event_type, body, dedup_id=dedup_id)
            except BusError as exc:
                return index, exc
        return len(messages), None

    @abc.abstractmethod
    async def consume(self, consumer: str, event_types: Sequence[str], handle: DeliveryHandler) -> None:
        """Create (or reuse) the durable subscriptions of ``consumer`` and start delivering to ``handle``.

        ``handle`` is called for one message at a time per subscription and must settle it.
        """

    @abc.abstractmethod
    async def stop_consuming(self) -> None:
        """Take no new message, let the handler in flight finish, give back what was fetched but not handled."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def purge(self, consumers: Sequence[str]) -> None:
        """Remove everything this namespace created on the broker (used by tests that share a server)."""
        raise NotImplementedError


class Worker:
    """Feeds deliveries to a handler one at a time; stopping cancels it only while it waits for messages."""

    def __init__(self, name: str, next_batch: BatchSource, handle: DeliveryHandler) -> None:
        self._next_batch = next_batch
        self._handle = handle
        self._busy = False
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._one_batch()
            except Exception:  # the outermost consumer loop: log, the message comes again
                logger.exception("consumer loop %s failed; going on", self._task.get_name())
                await asyncio.sleep(1.0)

    async def _one_batch(self) -> None:
        batch = await self._next_batch()
        self._busy = True  # set before any await: stop() never cancels a handler mid-way
        try:
            for index, delivery in enumerate(batch):
                if self._stopping:
                    for left in batch[index:]:
                        await left.release()
                    break
                await self._handle(delivery)
        finally:
            self._busy = False

    async def stop(self) -> None:
        self._stopping = True
        if not self._busy:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def redact(url: str) -> str:
    """A broker URL without its credentials, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Exponential delay for the ``attempt``-th consecutive failure (1-based), capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def broker_for(url: str, namespace: str, *, stream_replicas: int = 1) -> Broker:
    """The adapter a URL names: ``nats://`` (JetStream) or ``amqp://`` / ``amqps://`` (RabbitMQ)."""
    if url.startswith(("nats://", "tls://")):
        from microshop_kit.bus.nats_broker import NatsBroker

        return NatsBroker(url, namespace, replicas=stream_replicas)
    if url.startswith(("amqp://", "amqps://")):
        from microshop_kit.bus.rabbit_broker import RabbitBroker

        return RabbitBroker(url, namespace)
    raise ConfigError(f"broker_url {url!r} is neither nats://... nor amqp://...")

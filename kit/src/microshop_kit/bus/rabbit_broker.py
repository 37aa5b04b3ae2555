"""RabbitMQ adapter: a topic exchange per namespace, one durable quorum queue per consumer, manual acks.

RabbitMQ has no broker-side dedup: ``message_id`` carries the event id and the consumers' inbox drops
repeats. Quorum queues count deliveries in ``x-delivery-count`` (absent on the first delivery). An event
published before any consumer's queue is bound to its type is dropped by the exchange, as with any topic
exchange: a consumer's queue exists from its first start on, and keeps events while the consumer is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from aio_pika.exceptions import AMQPError

from microshop_kit.bus.broker import Broker, Delivery, DeliveryHandler, Worker, check_name, redact
from microshop_kit.errors import BusError

logger = logging.getLogger("microshop.bus")

_AMQP_ERRORS = (AMQPError, aiormq.exceptions.AMQPError, asyncio.TimeoutError, OSError, RuntimeError)


class RabbitDelivery(Delivery):
    def __init__(self, message: AbstractIncomingMessage, broker: RabbitBroker) -> None:
        headers = message.headers or {}
        count = headers.get("x-delivery-count", 0)
        super().__init__(
            message.body,
            event_type=message.routing_key or message.type or "",
            message_id=message.message_id,
            deliveries=int(count if isinstance(count, int) else 0) + 1,
        )
        self._message = message
        self._broker = broker

    async def ack(self) -> None:
        try:
            await self._message.ack()
        except _AMQP_ERRORS as exc:
            raise BusError(f"RabbitMQ ack of {self.message_id} failed: {exc!r}") from exc

    async def retry(self, delay: float) -> None:
        if delay <= 0:
            await self.nack()
        else:
            # Held unacked for the delay (it counts against the prefetch), while later messages go on.
            self._broker.later(self.nack_after(delay))

    async def nack_after(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:  # cancelled at shutdown: give it back at once
            try:
                await self.nack()
            except BusError as exc:
                logger.debug("%s", exc)

    async def nack(self) -> None:
        try:
            await self._message.nack(requeue=True)
        except _AMQP_ERRORS as exc:
            raise BusError(f"RabbitMQ nack of {self.message_id} failed: {exc!r}") from exc


class RabbitBroker(Broker):
    """Exchange ``<namespace>.events`` (topic, routing key = event type); queue ``<namespace>.<consumer>``."""

    prefetch = 32
    publish_timeout = 5.0

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__(url, namespace)
        self.exchange_name = f"{namespace}.events"
        self._conn: AbstractRobustConnection | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._incoming: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._worker: Worker | None = None
        self._timers: set[asyncio.Task[None]] = set()

    def queue_name(self, consumer: str) -> str:
        return f"{self.namespace}.{check_name('consumer', consumer)}"

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed and conn.connected.is_set() and self._exchange is not None

    async def connect(self) -> None:
        try:
            if self._conn is None:
                # Fails fast the first time (the bus retries); recovers by itself after later outages.
                self._conn = await aio_pika.connect_robust(
                    self.url, reconnect_interval=1.0, timeout=5, client_properties={"connection_name": "microshop"}
                )
            if self._exchange is None:
                channel = await self._conn.channel(publisher_confirms=True)
                self._exchange = await self._declare_exchange(channel)
        except _AMQP_ERRORS as exc:
            raise BusError(f"RabbitMQ at {redact(self.url)} is not reachable: {exc!r}") from exc

    async def _declare_exchange(self, channel: AbstractRobustChannel) -> AbstractRobustExchange:
        exchange: AbstractRobustExchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return exchange

    async def publish(self, event_type: str, body: bytes, *, dedup_id: str) -> None:
        if self._exchange is None or not self.connected:
            raise BusError(f"RabbitMQ at {redact(self.url)} is not connected")
        message = aio_pika.Message(
            body,
            message_id=dedup_id,
            type=event_type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            # Waits for the publisher confirm; a nack raises DeliveryError.
            await self._exchange.publish(message, routing_key=event_type, mandatory=False, timeout=self.publish_timeout)
        except _AMQP_ERRORS as exc:
            raise BusError(f"RabbitMQ publish of {event_type} {dedup_id} failed: {exc!r}") from exc

    async def consume(self, consumer: str, event_types: Sequence[str], handle: DeliveryHandler) -> None:
        if self._conn is None:
            raise BusError(f"RabbitMQ at {redact(self.url)} is not connected")
        try:
            if self._channel is None:
                self._channel = await self._conn.channel()
                await self._channel.set_qos(prefetch_count=self.prefetch)
            exchange = await self._declare_exchange(self._channel)
            queue = await self._channel.declare_queue(
                self.queue_name(consumer), durable=True, arguments={"x-queue-type": "quorum"}
            )
            for event_type in event_types:
                await queue.bind(exchange, routing_key=event_type)
            self._queue = queue
            self._tag = await queue.consume(self._incoming.put, no_ack=False)
        except _AMQP_ERRORS as exc:
            raise BusError(f"RabbitMQ consumer {consumer} could not subscribe: {exc!r}") from exc
        self._worker = Worker(f"rabbit:{queue.name}", self._next_batch, handle)

    async def _next_batch(self) -> list[Delivery]:
        return [RabbitDelivery(await self._incoming.get(), self)]

    def later(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a delayed nack in the background; stop_consuming cuts its wait short."""
        task = asyncio.create_task(coro)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def stop_consuming(self) -> None:
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except _AMQP_ERRORS as exc:
                logger.debug("RabbitMQ cancel failed: %r", exc)
            self._tag = None
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        while not self._incoming.empty():
            await _give_back(RabbitDelivery(self._incoming.get_nowait(), self))
        timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_consuming()
        if self._conn is not None:
            try:
                await self._conn.close()
            except _AMQP_ERRORS as exc:
                logger.debug("RabbitMQ close failed: %r", exc)

    async def purge(self, consumers: Sequence[str]) -> None:
        await self.delete_topology(consumers)

    async def delete_topology(self, consumers: Sequence[str]) -> None:
        """Remove the namespace's exchange and the consumers' queues (test cleanup)."""
        if self._conn is None:
            return
        channel = await self._conn.channel()
        for consumer in consumers:
            await channel.queue_delete(self.queue_name(consumer), if_unused=False, if_empty=False)
        await channel.exchange_delete(self.exchange_name)
        await channel.close()


async def _give_back(delivery: RabbitDelivery) -> None:
    try:
        await delivery.nack()
    except BusError as exc:
        logger.debug("%s", exc)

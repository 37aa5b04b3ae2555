"""NATS JetStream adapter: one file-backed stream per namespace, a durable pull consumer per (consumer, type).

The system server here is NATS 2.9 (no multi-filter consumers), hence one consumer per event type. Publishes
carry ``Nats-Msg-Id`` (the event id), so a relay's retry inside the stream's duplicate window is dropped by
the server; anything older is caught by the consumers' inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from microshop_kit.bus.broker import (
    Broker,
    Delivery,
    DeliveryHandler,
    Outgoing,
    Worker,
    backoff,
    check_name,
    redact,
)
from microshop_kit.errors import BusError

logger = logging.getLogger("microshop.bus")

_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


class NatsDelivery(Delivery):
    def __init__(self, msg: Msg, event_type: str) -> None:
        headers = msg.headers or {}
        super().__init__(
            msg.data,
            event_type=event_type,
            message_id=headers.get("Nats-Msg-Id"),
            deliveries=int(msg.metadata.num_delivered),
        )
        self._msg = msg

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        except _NATS_ERRORS as exc:  # the name only: some of these errors print the whole message
            raise BusError(f"NATS ack of {self.message_id} failed: {type(exc).__name__}") from exc

    async def retry(self, delay: float) -> None:
        try:
            await self._msg.nak(delay=delay if delay > 0 else None)
        except _NATS_ERRORS as exc:
            raise BusError(f"NATS nak of {self.message_id} failed: {type(exc).__name__}") from exc


class NatsBroker(Broker):
    """JetStream: stream ``<NAMESPACE>_EVENTS`` on ``<namespace>.events.>``, subject per event type."""

    ack_wait = 30.0
    fetch_batch = 32
    #: A pull request lost with a crashed server is only noticed when it expires: keep it short.
    fetch_timeout = 2.0
    request_timeout = 5.0
    #: Publishes with the same Nats-Msg-Id inside this window are stored once.
    duplicate_window = 120.0

    def __init__(self, url: str, namespace: str, *, replicas: int = 1) -> None:
        super().__init__(url, namespace)
        self.stream = f"{namespace.upper()}_EVENTS"
        self.replicas = replicas
        self._nc = Client()
        self._js: JetStreamContext | None = None
        self._opened = False
        self._closing = False
        self._errors = 0
        self._stream_ready = False
        self._workers: list[Worker] = []
        self._pulls: list[_Pull] = []

    def subject(self, event_type: str) -> str:
        return f"{self.namespace}.events.{event_type}"

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected) and self._stream_ready

    # ------------------------------------------------------------------------------------------ connection

    async def connect(self) -> None:
        if not self._opened:
            # Retries until the first connection succeeds, then reconnects forever after an outage.
            await self._nc.connect(
                self.url,
                name=f"microshop-{self.namespace}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            self._js = self._nc.jetstream(timeout=self.request_timeout)
            self._opened = True
            self._errors = 0
        await self._ensure_stream()

    async def _on_error(self, exc: Exception) -> None:
        self._errors += 1
        if self._errors in (1, 10) or self._errors % 100 == 0:  # the client retries every second: not each time
            logger.warning("NATS %s: %r (error %d since the last connect)", redact(self.url), exc, self._errors)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            logger.warning("NATS %s: disconnected; reconnecting", redact(self.url))

    async def _on_reconnected(self) -> None:
        self._errors = 0
        logger.info("NATS %s: reconnected", redact(self.url))

    @property
    def client_connected(self) -> bool:
        """The connection is up (the stream may still be missing)."""
        return bool(self._nc.is_connected)

    def jetstream(self) -> JetStreamContext:
        """The JetStream context; BusError while disconnected."""
        if self._js is None or not self._nc.is_connected:
            raise BusError(f"NATS at {redact(self.url)} is not connected")
        return self._js

    async def _ensure_stream(self) -> None:
        js = self.jetstream()
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.namespace}.events.>"],
            storage=api.StorageType.FILE,
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas,
        )
        try:
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
            else:
                if (info.config.num_replicas or 1) < self.replicas:
                    # Raised, never lowered: another service may have been given more copies on purpose.
                    await js.update_stream(dataclasses.replace(info.config, num_replicas=self.replicas))
                    logger.info("NATS stream %s raised to %d replicas", self.stream, self.replicas)
        except _NATS_ERRORS as exc:
            self._stream_ready = False
            raise BusError(f"NATS stream {self.stream} at {redact(self.url)} is not available: {exc!r}") from exc
        self._stream_ready = True

    # --------------------------------------------------------------------------------------------- publish

    async def publish(self, event_type: str, body: bytes, *, dedup_id: str) -> None:
        js = self.jetstream()
        try:
            await js.publish(self.subject(event_type), body, stream=self.stream, headers={"Nats-Msg-Id": dedup_id})
        except nats.js.errors.NoStreamResponseError as exc:
            self._stream_ready = False  # the server lost the stream (new store): create it again, then retry
            await self._ensure_stream()
            raise BusError(f"NATS stream {self.stream} was missing for {dedup_id}") from exc
        except _NATS_ERRORS as exc:
            raise BusError(f"NATS publish of {event_type} {dedup_id} failed: {exc!r}") from exc

    async def publish_in_order(self, messages: Sequence[Outgoing]) -> tuple[int, BusError | None]:
        """Send every message before waiting for any acknowledgement (JetStream's async publish: the server
        stores them in the order they arrive on this connection), then read the acknowledgements in order. One
        round trip for a whole batch instead of one per event: a relay waiting for each ack in turn fell behind
        a busy service (measured: 800 events unsent after 15 s at ~150 checkouts/s).

        On a failure, later messages of the batch may already be stored: they are not counted, so the relay
        sends them again and the server drops them as duplicates (``Nats-Msg-Id``, within the stream's
        duplicate window); the refused one then lands after them."""
        try:
            js = self.jetstream()
        except BusError as exc:
            return 0, exc
        pending: list[asyncio.Future[Any]] = []
        try:
            try:
                for event_type, body, dedup_id in messages:
                    headers = {"Nats-Msg-Id": dedup_id}
                    pending.append(
                        await js.publish_async(self.subject(event_type), body, stream=self.stream, headers=headers)
                    )
            except _NATS_ERRORS as exc:
                failure = BusError(f"NATS publish of {messages[len(pending)][0]} failed: {exc!r}")
                return await self._acknowledged(pending, failure)
            return await self._acknowledged(pending, None)
        finally:
            for future in pending:
                future.cancel()  # no-op once settled; frees the client's slot of any still unanswered

    async def _acknowledged(
        self, pending: list[asyncio.Future[Any]], failure: BusError | None
    ) -> tuple[int, BusError | None]:
        """How many of ``pending``, from the first, the stream acknowledged within the request timeout, and the
        error that stopped the count (``failure`` when every one sent was acknowledged: what stopped the
        sending, if anything)."""
        try:
            async with asyncio.timeout(self.request_timeout):
                for index, future in enumerate(pending):
                    try:
                        await future
                    except nats.js.errors.NoStreamResponseError:
                        self._stream_ready = False  # the server lost the stream: create it again, then retry
                        with contextlib.suppress(BusError):
                            await self._ensure_stream()
                        return index, BusError(f"NATS stream {self.stream} was missing")
                    except _NATS_ERRORS as exc:
                        return index, BusError(f"NATS publish failed: {exc!r}")
        except TimeoutError:
            done = next((i for i, future in enumerate(pending) if not future.done()), len(pending))
            return done, BusError(f"NATS publish not acknowledged within {self.request_timeout} s")
        return len(pending), failure

    # --------------------------------------------------------------------------------------------- consume

    def durable_name(self, consumer: str, event_type: str) -> str:
        return f"{check_name('consumer', consumer)}__{event_type.replace('.', '_')}"

    async def consume(self, consumer: str, event_types: Sequence[str], handle: DeliveryHandler) -> None:
        for event_type in event_types:
            pull = _Pull(self, self.durable_name(consumer, event_type), event_type)
            await pull.subscribe()
            self._pulls.append(pull)
            self._workers.append(Worker(f"nats:{pull.durable}", pull.next_batch, handle))

    async def ensure_consumer(self, durable: str, event_type: str) -> None:
        js = self.jetstream()
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=self.subject(event_type),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # the bus dead-letters after max_deliveries itself: the server must not drop it
        )
        try:
            try:
                await js.consumer_info(self.stream, durable)
            except nats.js.errors.NotFoundError:
                await self._ensure_stream()
                await js.add_consumer(self.stream, config)
        except _NATS_ERRORS as exc:
            raise BusError(f"NATS consumer {durable} is not available: {exc!r}") from exc

    async def stop_consuming(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(worker.stop() for worker in workers))
        pulls, self._pulls = self._pulls, []
        for pull in pulls:
            await pull.unsubscribe()

    async def close(self) -> None:
        self._closing = True
        await self.stop_consuming()
        try:
            await self._nc.close()
        except _NATS_ERRORS as exc:
            logger.debug("NATS close failed: %r", exc)

    # ------------------------------------------------------------------------------------------- for tests

    async def stream_messages(self) -> int:
        """How many messages the namespace's stream holds (tests check the dedup id with it)."""
        info: Any = await self.jetstream().stream_info(self.stream)
        return int(info.state.messages)

    async def purge(self, consumers: Sequence[str]) -> None:
        await self.delete_stream()

    async def delete_stream(self) -> None:
        """Remove the namespace's stream and its consumers (test cleanup)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.jetstream().delete_stream(self.stream)


class _Pull:
    """One durable pull consumer: fetches batches, and re-creates the consumer if the server lost it."""

    def __init__(self, broker: NatsBroker, durable: str, event_type: str) -> None:
        self.broker = broker
        self.durable = durable
        self.event_type = event_type
        self.failures = 0
        self._sub: JetStreamContext.PullSubscription | None = None

    async def subscribe(self) -> None:
        await self.broker.ensure_consumer(self.durable, self.event_type)
        try:
            self._sub = await self.broker.jetstream().pull_subscribe_bind(
                durable=self.durable, stream=self.broker.stream
            )
        except _NATS_ERRORS as exc:
            raise BusError(f"NATS subscribe to {self.durable} failed: {exc!r}") from exc

    async def next_batch(self) -> list[Delivery]:
        if self._sub is None or not self.broker.client_connected:
            await asyncio.sleep(0.2)  # the client is reconnecting: a fetch now would only time out
            return []
        try:
            msgs = await self._sub.fetch(self.broker.fetch_batch, timeout=self.broker.fetch_timeout)
        except TimeoutError:
            # Nothing came within the timeout: nats-py raises its own TimeoutError, or the builtin one when the
            # time ran out between its two pull requests. Either is an idle consumer, not a failure.
            self.failures = 0
            return []
        except _NATS_ERRORS as exc:
            self.failures += 1
            logger.warning("NATS fetch for %s failed (%r); checking the consumer", self.durable, exc)
            await asyncio.sleep(backoff(self.failures, base=0.2, cap=5.0))
            try:
                await self.broker.ensure_consumer(self.durable, self.event_type)
            except BusError as failure:
                logger.warning("%s", failure)
            return []
        self.failures = 0
        return [NatsDelivery(msg, self.event_type) for msg in msgs]

    async def unsubscribe(self) -> None:
        if self._sub is None:
            return
        try:
            await self._sub.unsubscribe()
        except _NATS_ERRORS as exc:
            logger.debug("NATS unsubscribe of %s failed: %r", self.durable, exc)

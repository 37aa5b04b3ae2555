"""The bus a service uses: its outbox, the relay, and its consumer, over the broker its settings name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from microshop_contracts import EVENT_TYPES
from microshop_kit.bus.broker import Broker, backoff, broker_for, check_name
from microshop_kit.bus.consumer import Handler, InboxConsumer, RetryPolicy
from microshop_kit.bus.outbox import Outbox, Relay
from microshop_kit.db import Database
from microshop_kit.errors import BusError, ConfigError
from microshop_kit.settings import ServiceSettings

logger = logging.getLogger("microshop.bus")


@dataclass(frozen=True)
class BusOptions:
    """Timings of the bus; the defaults suit a service, tests shorten them."""

    #: Deliveries of a failing message before it is dead-lettered (a settings class may set
    #: ``bus_max_deliveries`` to change the default).
    max_deliveries: int = 5
    retry_delay: float = 0.5
    max_retry_delay: float = 30.0
    relay_batch: int = 100
    relay_poll_interval: float = 1.0
    relay_max_backoff: float = 2.0
    connect_max_backoff: float = 5.0
    #: How long close() lets the relay flush what is left before giving up (the rows stay for next time).
    close_flush_timeout: float = 2.0


class EventBus:
    """``bus = EventBus(settings, db, consumer="notifications", handlers={"order.confirmed.v1": on_order})``.

    ``start()`` never blocks on the broker: it connects in the background and keeps trying, while the outbox
    already accepts events. With an empty ``broker_url`` the bus is disabled: events are still written to the
    outbox (and will be published by a later start with a broker), nothing is consumed, ``enabled`` is False
    and ``connected`` True (nothing is missing).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        db: Database,
        *,
        consumer: str | None = None,
        handlers: Mapping[str, Handler] | None = None,
        options: BusOptions | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.consumer = check_name("consumer", consumer or settings.service_name)
        self.handlers = dict(handlers or {})
        unknown = sorted(set(self.handlers) - set(EVENT_TYPES))
        if unknown:
            raise ConfigError(f"Consumer {self.consumer} handles {unknown}, which no event contract is named")
        self.options = options or BusOptions(max_deliveries=settings.bus_max_deliveries)
        self.db = db
        self.outbox = Outbox(db, source=settings.service_name)
        if broker is None and settings.broker_url:
            broker = broker_for(
                settings.broker_url, settings.bus_namespace, stream_replicas=settings.bus_stream_replicas
            )
        self.broker = broker
        self.enabled = broker is not None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._relay: Relay | None = None

    @property
    def connected(self) -> bool:
        """For readiness: the broker connection is up (always True when the bus is disabled)."""
        if self.broker is None:
            return True
        alive = self._task is not None and not self._task.done()
        return alive and self._ready.is_set() and self.broker.connected

    async def wait_ready(self) -> None:
        """Wait until connected and subscribed (``async with asyncio.timeout(...)`` bounds it)."""
        await self._ready.wait()

    async def start(self) -> None:
        if self.broker is None:
            logger.info("event bus disabled (no broker_url): events stay in the outbox")
            return
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(self.broker), name=f"bus:{self.consumer}")

    async def _run(self, broker: Broker) -> None:
        try:
            await self._connect_and_relay(broker)
        except Exception:  # the outermost bus task: without it the bus would stop without a word
            logger.exception("event bus %s stopped; readiness reports it", self.consumer)
            raise

    async def _connect_and_relay(self, broker: Broker) -> None:
        await self._retry("connect", broker.connect)
        if self.handlers:
            policy = RetryPolicy(self.options.max_deliveries, self.options.retry_delay, self.options.max_retry_delay)
            inbox = InboxConsumer(self.db, self.consumer, self.handlers, policy)
            await self._retry("subscribe", lambda: broker.consume(self.consumer, sorted(self.handlers), inbox.handle))
        self._ready.set()
        logger.info("event bus connected to %s (consumer %s)", broker.__class__.__name__, self.consumer)
        self._relay = Relay(
            self.db,
            broker,
            self.outbox.wakeup,
            batch=self.options.relay_batch,
            poll_interval=self.options.relay_poll_interval,
            max_backoff=self.options.relay_max_backoff,
        )
        await self._relay.run()

    async def _retry(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await step()
                return
            except BusError as exc:
                failures += 1
                delay = backoff(failures, base=0.2, cap=self.options.connect_max_backoff)
                log = logger.warning if failures in (1, 10) or failures % 100 == 0 else logger.debug
                log("event bus %s failed (attempt %d), retrying in %.1fs: %s", what, failures, delay, exc)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Stop consuming (the handler in flight finishes), stop the relay, flush briefly, disconnect."""
        if self.broker is None or self._task is None:
            return
        await self.broker.stop_consuming()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # a failure was logged when it happened
            await self._task
        if self._relay is not None and self.broker.connected:
            try:
                async with asyncio.timeout(self.options.close_flush_timeout):
                    await self._relay.publish_pending()
            except (BusError, TimeoutError) as exc:
                logger.info("event bus: events left in the outbox for the next start (%s)", exc)
        await self.broker.close()
        self._task = None

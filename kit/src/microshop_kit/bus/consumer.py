"""The consuming side: validate each message, run its handler in the inbox transaction, then settle it.

Per message: the envelope and its ``data`` are checked against the contract (a message that fails is poison:
dead-lettered at once). Then ONE transaction inserts the inbox row ``(consumer, event_id)`` and, only when that
row is new, runs the handler, so the effects and the "handled" mark commit together. The message is acked
only after that commit. A handler error rolls back and asks for a redelivery after a backoff; after
``max_deliveries`` the message is recorded in ``bus_dead_letters`` and then acked: never a silent ack.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from microshop_contracts import Envelope
from microshop_kit.bus.broker import Delivery, backoff
from microshop_kit.context import TraceContext, trace_var
from microshop_kit.db import Database, Tx
from microshop_kit.errors import BusError, DatabaseUnavailable

logger = logging.getLogger("microshop.bus")

#: A consumer's handler: runs inside the inbox transaction; raising rolls everything back.
Handler = Callable[[Tx, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing message comes back, and when it is given up on."""

    max_deliveries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, deliveries: int) -> float:
        return backoff(deliveries, base=self.base_delay, cap=self.max_delay)


class PoisonMessage(Exception):
    """A message no retry can fix: not an envelope, or data that breaks its contract."""


def parse(delivery: Delivery) -> Envelope:
    try:
        envelope = Envelope.model_validate_json(delivery.body)
        envelope.event()  # the contract check; handlers validate again into the model they need
    except (ValidationError, KeyError, ValueError) as exc:
        raise PoisonMessage(f"{type(exc).__name__}: {exc}") from exc
    return envelope


class InboxConsumer:
    """Runs handlers exactly once per (consumer, event id) and settles each delivery."""

    def __init__(
        self, db: Database, consumer: str, handlers: Mapping[str, Handler], policy: RetryPolicy | None = None
    ) -> None:
        self.db = db
        self.consumer = consumer
        self.handlers = dict(handlers)
        self.policy = policy or RetryPolicy()

    async def handle(self, delivery: Delivery) -> None:
        """Handle and settle one delivery; never raises (but for cancellation)."""
        try:
            await self._handle(delivery)
        except BusError as exc:  # an ack/nak that did not reach the broker: it redelivers, the inbox dedupes
            logger.warning("consumer %s: could not settle a message: %s", self.consumer, exc)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse(delivery)
        except PoisonMessage as exc:
            await self._dead_letter(delivery, _event_id(delivery), delivery.event_type, str(exc))
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            await self._dead_letter(delivery, envelope.id, envelope.type, f"no handler for {envelope.type!r}")
            return
        try:
            handled = await self._run(handler, envelope)
        except DatabaseUnavailable as exc:  # not the message's fault: never counts towards dead-lettering
            logger.warning("consumer %s: database unavailable for %s: %s", self.consumer, envelope.id, exc)
            await delivery.retry(self.policy.delay(delivery.deliveries))
            return
        except Exception as exc:  # noqa: BLE001 - the outermost handling of one message: nak or dead-letter
            await self._failed(delivery, envelope, exc)
            return
        await delivery.ack()
        if not handled:
            logger.info("consumer %s: %s %s was already handled", self.consumer, envelope.type, envelope.id)

    async def _run(self, handler: Handler, envelope: Envelope) -> bool:
        parent = TraceContext.parse(envelope.traceparent)
        token = trace_var.set(parent.child() if parent else TraceContext.new())
        try:
            async with self.db.transaction() as tx:
                new = await tx.execute(
                    "INSERT INTO inbox (consumer, event_id, type, handled_at) "
                    "VALUES (:consumer, :event_id, :type, :now) ON CONFLICT (consumer, event_id) DO NOTHING",
                    {"consumer": self.consumer, "event_id": envelope.id, "type": envelope.type, "now": _now()},
                )
                if new:
                    await handler(tx, envelope)
            return bool(new)
        finally:
            trace_var.reset(token)

    async def _failed(self, delivery: Delivery, envelope: Envelope, exc: Exception) -> None:
        if delivery.deliveries < self.policy.max_deliveries:
            delay = self.policy.delay(delivery.deliveries)
            logger.warning(
                "consumer %s: handler for %s %s failed (delivery %d of %d), retrying in %.2fs: %r",
                self.consumer, envelope.type, envelope.id, delivery.deliveries,
                self.policy.max_deliveries, delay, exc,
            )  # fmt: skip
            await delivery.retry(delay)
            return
        await self._dead_letter(delivery, envelope.id, envelope.type, f"{type(exc).__name__}: {exc}", exc)

    async def _dead_letter(
        self, delivery: Delivery, event_id: str, event_type: str, error: str, exc: Exception | None = None
    ) -> None:
        """Record the message as given up on, then ack it; if the record cannot be written, retry instead."""
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO bus_dead_letters "
                    "(consumer, event_id, type, payload, error, deliveries, created_at) "
                    "VALUES (:consumer, :event_id, :type, :payload, :error, :deliveries, :now) "
                    "ON CONFLICT (consumer, event_id) DO NOTHING",
                    {
                        "consumer": self.consumer, "event_id": event_id, "type": event_type or "?",
                        "payload": delivery.body.decode("utf-8", "replace"), "error": error[:4000],
                        "deliveries": delivery.deliveries, "now": _now(),
                    },
                )  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # noqa: BLE001 - not written, so not acked: it comes back later
            logger.warning(
                "consumer %s: dead letter for %s not written (%r); retrying", self.consumer, event_id, failure
            )
            await delivery.retry(self.policy.delay(delivery.deliveries))
            return
        logger.error(
            "consumer %s: %s %s dead-lettered after %d deliveries: %s",
            self.consumer, event_type, event_id, delivery.deliveries, error, exc_info=exc,
        )  # fmt: skip
        await delivery.ack()


def _event_id(delivery: Delivery) -> str:
    """The id a poison message is recorded under: its broker message id, else a digest of its body."""
    return delivery.message_id or "sha256:" + hashlib.sha256(delivery.body).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()

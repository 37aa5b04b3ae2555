"""The transactional outbox: events committed with the state change, and the relay that publishes them.

``Outbox.add`` writes the envelope in the caller's transaction and wakes the relay once it commits, so an event
normally leaves within milliseconds; the relay also polls, as a fallback for rows written by another instance
or left by a crash. Rows are published in ``seq`` order (a batch at a time, ``Broker.publish_in_order``) and
marked sent by id, never by range: on PostgreSQL a row with a lower seq can commit after a higher one, and a
range would mark it sent unpublished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from microshop_contracts import EVENT_TYPES, Envelope, Event
from microshop_kit.bus.broker import Broker, backoff
from microshop_kit.context import trace_var
from microshop_kit.db import Database, Row, Tx
from microshop_kit.errors import BusError

logger = logging.getLogger("microshop.bus")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Outbox:
    """Where a service puts the events it publishes: ``await outbox.add(tx, OrderConfirmed(...))``."""

    def __init__(self, db: Database, *, source: str) -> None:
        self.db = db
        self.source = source
        #: Set after a transaction that added events commits; the relay waits on it.
        self.wakeup = asyncio.Event()

    async def add(self, tx: Tx, event: Event) -> Envelope:
        """Write ``event`` in ``tx``; it is published once (and only if) ``tx`` commits."""
        if EVENT_TYPES.get(event.TYPE) is not type(event):
            raise BusError(f"{type(event).__name__} ({event.TYPE!r}) is not a registered event contract")
        trace = trace_var.get()
        envelope = Envelope.wrap(event, source=self.source, traceparent=trace.traceparent if trace else None)
        await tx.execute(
            "INSERT INTO outbox (id, type, payload, created_at) VALUES (:id, :type, :payload, :created_at)",
            {"id": envelope.id, "type": envelope.type, "payload": envelope.model_dump_json(), "created_at": _now()},
        )
        tx.after_commit(self.wakeup.set)
        return envelope


class Relay:
    """Publishes unsent outbox rows in order; on a broker failure keeps them and retries, forever."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        wakeup: asyncio.Event,
        *,
        batch: int = 100,
        poll_interval: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        self.db = db
        self.broker = broker
        self.wakeup = wakeup
        self.batch = batch
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff

    async def publish_pending(self) -> int:
        """One pass: publish up to ``batch`` unsent rows; returns how many were published.

        Only the rows before the first one the broker refuses are marked sent; then raises BusError. (With
        NATS the whole batch is sent before the acknowledgements are read: a later row the server did store is
        sent again and dropped as a duplicate, and the refused row lands after it.)
        """
        rows = await self.db.fetch(
            "SELECT seq, id, type, payload FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT :limit",
            {"limit": self.batch},
        )
        messages = [(row["type"], row["payload"].encode(), row["id"]) for row in rows]
        count, failure = await self.broker.publish_in_order(messages)
        await self._mark_sent([row["seq"] for row in rows[:count]])
        if failure is not None:
            await self._record_failure(rows[count], failure)
            raise failure
        return count

    async def _mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        names = {f"s{i}": seq for i, seq in enumerate(seqs)}
        placeholders = ", ".join(f":{name}" for name in names)
        await self.db.execute(
            f"UPDATE outbox SET sent_at = :now WHERE sent_at IS NULL AND seq IN ({placeholders})",
            {"now": _now(), **names},
        )

    async def _record_failure(self, row: Row, exc: BusError) -> None:
        await self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = :error WHERE seq = :seq",
            {"error": str(exc)[:1000], "seq": row["seq"]},
        )

    async def run(self) -> None:
        """The relay loop, for the life of the bus."""
        failures = 0
        while True:
            self.wakeup.clear()  # before reading: a commit during the pass sets it again
            try:
                published = await self.publish_pending()
            except BusError as exc:
                failures += 1
                logger.warning("outbox relay: %s; retrying (failure %d)", exc, failures)
            except Exception:  # the outermost relay loop: the rows stay, the next pass retries
                failures += 1
                logger.exception("outbox relay pass failed; retrying (failure %d)", failures)
            else:
                failures = 0
                if published >= self.batch:
                    continue  # a full batch: more may be waiting now
            if failures:
                await asyncio.sleep(backoff(failures, base=0.05, cap=self.max_backoff))
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the
            # event is set, and the relay would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self.wakeup.wait()

"""Use cases: record the messages an event asks for (in the consumer's transaction), and send what is due."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from email.utils import make_msgid
from typing import Protocol

from microshop_contracts import Envelope
from microshop_kit.bus import Handler
from microshop_kit.db import Row, Tx
from microshop_kit.errors import MicroshopError
from microshop_kit.log import get_logger
from microshop_notifications.domain import (
    Contact,
    DirectoryUnavailable,
    Email,
    RecipientUnknown,
    RetryPolicy,
    SendFailure,
    Sms,
    Status,
    undeliverable,
)
from microshop_notifications.store import Claimed, MessageStore, iso, now

log = get_logger("microshop.notifications")


class Transport(Protocol):
    """Hands one claimed message to the outside world (an SMTP server, an SMS provider)."""

    async def send(self, message: Claimed) -> None:
        """Deliver, or raise SendFailure."""


class Lookup(Protocol):
    async def lookup(self, user_id: str) -> Contact:
        """The user's contact, or RecipientUnknown / DirectoryUnavailable."""


class Recorder:
    """Records the messages an event asks for, one per channel; the sender is woken once the consumer's
    transaction commits."""

    def __init__(self, *, message_id_domain: str, wake: Callable[[], None]) -> None:
        self.message_id_domain = message_id_domain
        self.wake = wake

    async def record(
        self,
        tx: Tx,
        *,
        event_id: str,
        event_type: str,
        message: Email | Sms,
        user_id: str | None,
        address_later: bool = False,
    ) -> bool:
        """False when this event already has its message on that channel (a redelivery the inbox did not catch).

        ``address_later``: the email has no recipient yet; the sender looks it up (the event named only a user).
        """
        problem = None if address_later else _undeliverable(message)
        recorded = await MessageStore.record(
            tx,
            event_id=event_id,
            event_type=event_type,
            message=message,
            user_id=user_id,
            message_id=make_msgid(domain=self.message_id_domain),
            status=Status.DEAD if problem else Status.PENDING,
            error=problem,
        )
        if problem:
            log.error("message cannot be sent", event_id=event_id, event_type=event_type, error=problem)
        if recorded:
            tx.after_commit(self.wake)
        return recorded


def _undeliverable(message: Email | Sms) -> str | None:
    if isinstance(message, Email):
        return undeliverable(message)
    return None if message.recipient else "No phone number"


class Sender:
    """Sends due messages: woken right after a message is recorded, polling as the fallback."""

    def __init__(
        self,
        store: MessageStore,
        transports: Mapping[str, Transport],
        policy: RetryPolicy,
        *,
        directory: Lookup,
        wakeup: asyncio.Event,
        poll_interval: float,
        batch: int,
        lease_seconds: float,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self.transports = dict(transports)
        self.policy = policy
        self.directory = directory
        self.wakeup = wakeup
        self.poll_interval = poll_interval
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.stopping = False

    async def send_due(self) -> int:
        """One pass: claim a batch and try each message once, ``concurrency`` at a time; returns how many were
        claimed."""
        claimed = await self.store.claim_due(limit=self.batch, lease_seconds=self.lease_seconds)
        queue = list(reversed(claimed))

        async def worker() -> None:
            while queue:
                message = queue.pop()
                if self.stopping:  # give it back now rather than when its lease ends
                    await self.store.release(message)
                else:
                    await self._attempt(message)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(claimed)))))
        return len(claimed)

    async def _attempt(self, message: Claimed) -> None:
        if message.attempts > self.policy.max_attempts:
            # Earlier attempts ended without an outcome (crashes mid-send): stop here rather than loop forever.
            error = f"gave up after {message.attempts - 1} attempts that never finished"
            await self.store.mark_failed(message.id, Status.DEAD, error, 0)
            log.error("message not sent", message=message.id, event_id=message.event_id, error=error)
            return
        try:
            if not message.recipient:
                message = await self._address(message)
            await self.transports[message.channel].send(message)
        except DirectoryUnavailable as exc:
            # Users is down: not the message's fault, so the attempt is given back and the wait grows.
            delay = self.policy.delay(message.deferrals + 1)
            await self.store.defer(message, f"recipient lookup: {exc}", delay)
            log.warning("message waits for its recipient", message=message.id, error=str(exc), retry_in=delay)
            return
        except SendFailure as failure:
            status = self.policy.after_failure(failure, message.attempts)
            delay = self.policy.delay(message.attempts)
            await self.store.mark_failed(message.id, status, str(failure), delay)
            level = log.error if status is Status.DEAD else log.warning
            level(
                "message not sent",
                message=message.id,
                channel=message.channel,
                event_id=message.event_id,
                attempts=message.attempts,
                status=str(status),
                error=str(failure),
                retry_in=None if status is Status.DEAD else round(delay, 2),
            )
            return
        await self.store.mark_sent(message.id)
        log.info("message sent", message=message.id, channel=message.channel, event_id=message.event_id)

    async def _address(self, message: Claimed) -> Claimed:
        """Look up the recipient of a message recorded without one, and keep it on the message."""
        if message.user_id is None:
            raise SendFailure("The message names neither a recipient nor a user", permanent=True)
        try:
            contact = await self.directory.lookup(message.user_id)
        except RecipientUnknown as exc:
            raise SendFailure(str(exc), permanent=True) from exc
        await self.store.address(message.id, contact.email)
        return dataclasses.replace(message, recipient=contact.email)

    async def run(self) -> None:
        """The sender loop, until ``stop()`` (or cancellation)."""
        task = asyncio.current_task()
        while not self.stopping:
            # Python 3.11's asyncio.wait_for (used inside aiosmtplib) can swallow a cancellation that arrives
            # as its awaited result does; a task still marked as cancelling must stop all the same.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                while await self.send_due() >= self.batch and not self.stopping:
                    pass  # a full batch: more may be due right now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self.wakeup.wait()
            self.wakeup.clear()

    def stop(self) -> None:
        """Finish the message in flight (a cancelled SMTP conversation may deliver without being marked
        sent, and be sent again), start no other, and end the loop."""
        self.stopping = True
        self.wakeup.set()


@dataclasses.dataclass(frozen=True, slots=True)
class Retried:
    """What a retry of dead letters did."""

    messages: int
    events: int
    failed: list[str]


class DeadLetters:
    """What was given up on, for admins: messages out of attempts (or refused for good), and events the bus
    could not handle (``bus_dead_letters``); and the retry of both."""

    def __init__(self, store: MessageStore, handlers: Mapping[str, Handler], consumer: str) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.consumer = consumer

    async def events(self, *, limit: int) -> list[Row]:
        return await self.store.db.fetch(
            "SELECT event_id, type, error, deliveries, created_at FROM bus_dead_letters WHERE consumer = :c "
            "ORDER BY created_at DESC, event_id LIMIT :limit",
            {"c": self.consumer, "limit": limit},
        )

    async def retry(self, message_ids: list[str] | None = None, *, events: bool = True) -> Retried:
        """Make dead messages due again (all, or those ids), and run each dead event's handler once more."""
        requeued = await self.store.requeue_dead(message_ids)
        replayed, failed = 0, []
        if events:
            rows = await self.store.db.fetch(
                "SELECT event_id, payload FROM bus_dead_letters WHERE consumer = :c ORDER BY created_at",
                {"c": self.consumer},
            )
            for row in rows:
                try:
                    await self._replay(row["event_id"], row["payload"])
                    replayed += 1
                except (ValueError, KeyError, MicroshopError) as exc:  # stays a dead letter, with the new error
                    failed.append(f"{row['event_id']}: {type(exc).__name__}: {exc}")
                    await self.store.db.execute(
                        "UPDATE bus_dead_letters SET error = :e WHERE consumer = :c AND event_id = :id",
                        {"e": f"retry: {type(exc).__name__}: {exc}"[:4000], "c": self.consumer, "id": row["event_id"]},
                    )
        return Retried(messages=requeued, events=replayed, failed=failed)

    async def _replay(self, event_id: str, payload: str) -> None:
        """Handle the event as the bus would have (inbox row and effects in one transaction), then forget it."""
        envelope = Envelope.model_validate_json(payload)
        envelope.event()  # the contract check the bus made
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise KeyError(f"no handler for {envelope.type!r}")
        async with self.store.db.transaction() as tx:
            new = await tx.execute(
                "INSERT INTO inbox (consumer, event_id, type, handled_at) VALUES (:c, :id, :type, :at) "
                "ON CONFLICT (consumer, event_id) DO NOTHING",
                {"c": self.consumer, "id": envelope.id, "type": envelope.type, "at": iso(now())},
            )
            if new:
                await handler(tx, envelope)
            await tx.execute(
                "DELETE FROM bus_dead_letters WHERE consumer = :c AND event_id = :id",
                {"c": self.consumer, "id": event_id},
            )

"""Use cases: record the email an event asks for (in the consumer's transaction), and send what is due."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from email.utils import make_msgid
from typing import Protocol

from microshop_kit.db import Tx
from microshop_kit.log import get_logger
from microshop_notifications.domain import Email, RetryPolicy, SendFailure, Status, undeliverable
from microshop_notifications.store import Claimed, MessageStore

log = get_logger("microshop.notifications")


class Mailer(Protocol):
    async def send(self, message: Claimed) -> None:
        """Deliver, or raise SendFailure."""


class Recorder:
    """Records one email per event; the sender is woken once the consumer's transaction commits."""

    def __init__(self, *, message_id_domain: str, wake: Callable[[], None]) -> None:
        self.message_id_domain = message_id_domain
        self.wake = wake

    async def record(self, tx: Tx, *, event_id: str, event_type: str, email: Email, user_id: str | None) -> bool:
        """False when this event already has its email (a redelivery the inbox did not catch)."""
        problem = undeliverable(email)
        recorded = await MessageStore.record(
            tx,
            event_id=event_id,
            event_type=event_type,
            email=email,
            user_id=user_id,
            message_id=make_msgid(domain=self.message_id_domain),
            status=Status.DEAD if problem else Status.PENDING,
            error=problem,
        )
        if problem:
            log.error("email cannot be sent", event_id=event_id, event_type=event_type, error=problem)
        if recorded:
            tx.after_commit(self.wake)
        return recorded


class Sender:
    """Sends due messages: woken right after a message is recorded, polling as the fallback."""

    def __init__(
        self,
        store: MessageStore,
        mailer: Mailer,
        policy: RetryPolicy,
        *,
        wakeup: asyncio.Event,
        poll_interval: float,
        batch: int,
        lease_seconds: float,
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.policy = policy
        self.wakeup = wakeup
        self.poll_interval = poll_interval
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.stopping = False

    async def send_due(self) -> int:
        """One pass: claim a batch and try each message once; returns how many were claimed."""
        claimed = await self.store.claim_due(limit=self.batch, lease_seconds=self.lease_seconds)
        for index, message in enumerate(claimed):
            if self.stopping:  # give the rest back now rather than when their lease ends
                for left in claimed[index:]:
                    await self.store.release(left)
                break
            await self._attempt(message)
        return len(claimed)

    async def _attempt(self, message: Claimed) -> None:
        if message.attempts > self.policy.max_attempts:
            # Earlier attempts ended without an outcome (crashes mid-send): stop here rather than loop forever.
            error = f"gave up after {message.attempts - 1} attempts that never finished"
            await self.store.mark_failed(message.id, Status.DEAD, error, 0)
            log.error("email not sent", message=message.id, event_id=message.event_id, error=error)
            return
        try:
            await self.mailer.send(message)
        except SendFailure as failure:
            status = self.policy.after_failure(failure, message.attempts)
            delay = self.policy.delay(message.attempts)
            await self.store.mark_failed(message.id, status, str(failure), delay)
            level = log.error if status is Status.DEAD else log.warning
            level(
                "email not sent",
                message=message.id,
                event_id=message.event_id,
                attempts=message.attempts,
                status=str(status),
                error=str(failure),
                retry_in=None if status is Status.DEAD else round(delay, 2),
            )
            return
        await self.store.mark_sent(message.id)
        log.info("email sent", message=message.id, event_id=message.event_id, attempts=message.attempts)

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

"""The messages table: recording a message in the consumer's transaction, claiming due ones, outcomes, dead ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from microshop_kit.db import Database, Row, Tx
from microshop_notifications.domain import EMAIL, SMS, Email, Sms, Status

_DUE = "status IN ('pending', 'failed') AND next_attempt_at <= :now"
_CLAIMED = (
    "id, event_id, channel, recipient, user_id, subject, text_body, html_body, message_id, created_at, attempts, "
    "kind, deferrals"
)
_DEAD = "id, event_id, event_type, channel, recipient, user_id, subject, attempts, last_error, created_at"


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00), so text order is time order in both dialects.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this sender holds for one attempt (``attempts`` already counts it)."""

    id: str
    event_id: str
    channel: str
    recipient: str
    user_id: str | None
    subject: str
    text: str
    html: str | None
    message_id: str
    created_at: str
    attempts: int
    kind: str
    deferrals: int


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def record(
        tx: Tx,
        *,
        event_id: str,
        event_type: str,
        message: Email | Sms,
        user_id: str | None,
        message_id: str,
        status: Status = Status.PENDING,
        error: str | None = None,
    ) -> bool:
        """Record a message for an event, in the caller's transaction; False when that event already has one on
        that channel. An email with no recipient yet is addressed by the sender (a lookup at users)."""
        at = iso(now())
        is_email = isinstance(message, Email)
        changed = await tx.execute(
            "INSERT INTO messages (id, event_id, event_type, channel, recipient, user_id, subject, text_body, "
            "html_body, message_id, status, attempts, next_attempt_at, last_error, created_at, kind) VALUES (:id, "
            ":event_id, :event_type, :channel, :recipient, :user_id, :subject, :text, :html, :message_id, "
            ":status, 0, :at, :error, :at, :kind) ON CONFLICT (event_id, channel) DO NOTHING",
            {
                "id": str(uuid.uuid4()),
                "event_id": event_id,
                "event_type": event_type,
                "channel": EMAIL if is_email else SMS,
                "recipient": message.recipient,
                "user_id": user_id,
                "subject": message.subject if isinstance(message, Email) else "",
                "text": message.text,
                "html": message.html if isinstance(message, Email) else None,
                "message_id": message_id,
                "status": status,
                "error": error,
                "at": at,
                "kind": message.kind if isinstance(message, Email) else "transactional",
            },
        )
        return changed == 1

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Claimed]:
        """Take up to ``limit`` due messages for one attempt each.

        A claim counts the attempt and pushes next_attempt_at past the lease, so another sender (a second
        instance) skips the message, and a sender that crashes mid-send gives it back when the lease ends.
        Each claim is an UPDATE that checks again that the message is due, so of two concurrent claimers
        exactly one wins (PostgreSQL re-checks the WHERE once the row lock is granted; SQLite serialises
        writers).
        """
        moment = now()
        params = {"now": iso(moment), "lease": iso(moment + timedelta(seconds=lease_seconds))}
        seen = await self.db.fetch(
            f"SELECT id FROM messages WHERE {_DUE} ORDER BY next_attempt_at LIMIT :limit",
            {"now": params["now"], "limit": limit},
        )
        claimed: list[Claimed] = []
        if not seen:
            return claimed
        async with self.db.transaction() as tx:
            for row in seen:
                taken = await tx.fetchrow(
                    "UPDATE messages SET attempts = attempts + 1, next_attempt_at = :lease "
                    f"WHERE id = :id AND {_DUE} "
                    f"RETURNING {_CLAIMED}",
                    {"id": row["id"], **params},
                )
                if taken is not None:
                    claimed.append(_claimed(taken))
        return claimed

    async def release(self, message: Claimed) -> None:
        """Give back a claim not attempted (shutting down): due again now, the attempt not counted."""
        await self.db.execute(
            "UPDATE messages SET attempts = attempts - 1, next_attempt_at = :now "
            "WHERE id = :id AND attempts = :attempts AND status IN ('pending', 'failed')",
            {"id": message.id, "attempts": message.attempts, "now": iso(now())},
        )

    async def mark_sent(self, message_id: str) -> None:
        await self.db.execute(
            "UPDATE messages SET status = :status, sent_at = :at, last_error = NULL WHERE id = :id",
            {"status": Status.SENT, "at": iso(now()), "id": message_id},
        )

    async def mark_failed(self, message_id: str, status: Status, error: str, retry_in: float) -> None:
        await self.db.execute(
            "UPDATE messages SET status = :status, last_error = :error, next_attempt_at = :next WHERE id = :id",
            {
                "status": status,
                "error": error[:2000],
                "id": message_id,
                "next": iso(now() + timedelta(seconds=retry_in)),
            },
        )

    async def defer(self, message: Claimed, error: str, retry_in: float) -> None:
        """The recipient could not be looked up: wait and try again, the attempt not counted against it."""
        await self.db.execute(
            "UPDATE messages SET status = 'failed', attempts = attempts - 1, deferrals = deferrals + 1, "
            "last_error = :error, next_attempt_at = :next WHERE id = :id AND attempts = :attempts",
            {
                "id": message.id,
                "attempts": message.attempts,
                "error": error[:2000],
                "next": iso(now() + timedelta(seconds=retry_in)),
            },
        )

    async def address(self, message_id: str, recipient: str) -> None:
        await self.db.execute("UPDATE messages SET recipient = :r WHERE id = :id", {"r": recipient, "id": message_id})

    async def dead(self, *, limit: int) -> list[Row]:
        """Messages given up on, newest first, with their last error."""
        return await self.db.fetch(
            f"SELECT {_DEAD} FROM messages WHERE status = 'dead' ORDER BY created_at DESC, id LIMIT :limit",
            {"limit": limit},
        )

    async def requeue_dead(self, ids: list[str] | None = None) -> int:
        """Make dead messages due again now with a fresh count of attempts (all of them, or those ``ids``)."""
        params: dict[str, object] = {"now": iso(now())}
        where = "status = 'dead'"
        if ids is not None:
            names = {f"i{n}": value for n, value in enumerate(ids)}
            if not names:
                return 0
            where += f" AND id IN ({', '.join(':' + name for name in names)})"
            params.update(names)
        return await self.db.execute(
            f"UPDATE messages SET status = 'pending', attempts = 0, deferrals = 0, next_attempt_at = :now "
            f"WHERE {where}",
            params,
        )

    async def history(self, *, user_id: str | None, limit: int) -> list[Row]:
        """Newest first; every user's when ``user_id`` is None."""
        columns = "id, channel, subject, status, created_at, sent_at"
        if user_id is None:
            return await self.db.fetch(
                f"SELECT {columns} FROM messages ORDER BY created_at DESC, id LIMIT :limit", {"limit": limit}
            )
        return await self.db.fetch(
            f"SELECT {columns} FROM messages WHERE user_id = :user_id ORDER BY created_at DESC, id LIMIT :limit",
            {"user_id": user_id, "limit": limit},
        )


def _claimed(row: Row) -> Claimed:
    return Claimed(
        id=row["id"],
        event_id=row["event_id"],
        channel=row["channel"],
        recipient=row["recipient"],
        user_id=row["user_id"],
        subject=row["subject"],
        text=row["text_body"],
        html=row["html_body"],
        message_id=row["message_id"],
        created_at=row["created_at"],
        attempts=row["attempts"],
        kind=row["kind"],
        deferrals=row["deferrals"],
    )

"""Who to write to: the recipients read model (kept from user events) and lookups at the users service."""

from __future__ import annotations

from microshop_kit.db import Database, Row, Tx
from microshop_kit.errors import MicroshopError
from microshop_kit.http import ServiceClient
from microshop_notifications.domain import Contact, DirectoryUnavailable, RecipientUnknown
from microshop_notifications.store import iso, now

_COLUMNS = "user_id, email, name, phone, sms_order_updates, deleted"


class Recipients:
    """The read model: one row per user the service has heard of; a deleted account stays as an erased row."""

    @staticmethod
    async def get(tx: Tx, user_id: str) -> Contact | None:
        row = await tx.fetchrow(f"SELECT {_COLUMNS} FROM recipients WHERE user_id = :u", {"u": user_id})
        return _contact(row) if row is not None else None

    @staticmethod
    async def registered(tx: Tx, *, user_id: str, email: str, name: str) -> bool:
        """Record a user's address and name; False when the account was already deleted (it stays erased)."""
        changed = await tx.execute(
            "INSERT INTO recipients (user_id, email, name, updated_at) VALUES (:u, :email, :name, :at) "
            "ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name, "
            "updated_at = excluded.updated_at WHERE recipients.deleted = 0",
            {"u": user_id, "email": email, "name": name, "at": iso(now())},
        )
        return changed == 1

    @staticmethod
    async def contact_changed(
        tx: Tx, *, user_id: str, email: str, name: str, phone: str | None, sms_order_updates: bool
    ) -> None:
        """Record a user's current contact details and SMS opt-in (a deleted account stays erased)."""
        await Recipients.registered(tx, user_id=user_id, email=email, name=name)
        await Recipients.set_sms(tx, user_id=user_id, phone=phone, sms_order_updates=sms_order_updates)

    @staticmethod
    async def set_sms(tx: Tx, *, user_id: str, phone: str | None, sms_order_updates: bool) -> None:
        """Record a user's phone and SMS opt-in (for a user the read model already knows, not deleted)."""
        await tx.execute(
            "UPDATE recipients SET phone = :phone, sms_order_updates = :sms, updated_at = :at "
            "WHERE user_id = :u AND deleted = 0",
            {"u": user_id, "phone": phone, "sms": int(sms_order_updates), "at": iso(now())},
        )

    @staticmethod
    async def deleted(tx: Tx, user_id: str) -> None:
        """Erase the user's contact data for good, and give up the messages not sent to them yet."""
        at = iso(now())
        await tx.execute(
            "INSERT INTO recipients (user_id, deleted, updated_at) VALUES (:u, 1, :at) ON CONFLICT (user_id) "
            "DO UPDATE SET email = '', name = '', phone = NULL, sms_order_updates = 0, email_marketing = 0, "
            "deleted = 1, updated_at = excluded.updated_at",
            {"u": user_id, "at": at},
        )
        await tx.execute(
            "UPDATE messages SET status = 'dead', last_error = 'The account was deleted', recipient = '', "
            "next_attempt_at = :at WHERE user_id = :u AND status IN ('pending', 'failed')",
            {"u": user_id, "at": at},
        )


class Directory:
    """Finds a user's contact: the read model first, else the users service's internal lookup.

    The read model is the cache: an answer from users is written to it, so each user is fetched once.
    """

    def __init__(self, db: Database, users: ServiceClient | None) -> None:
        self.db = db
        self.users = users

    async def lookup(self, user_id: str) -> Contact:
        """The user's contact; RecipientUnknown when users says there is none, DirectoryUnavailable when users
        does not answer (the caller tries again later)."""
        async with self.db.transaction() as tx:
            known = await Recipients.get(tx, user_id)
        if known is not None and (known.deleted or known.email):
            if known.deleted:
                raise RecipientUnknown(f"The account {user_id!r} was deleted")
            return known
        contact = await self._fetch(user_id)
        async with self.db.transaction() as tx:
            await Recipients.registered(tx, user_id=user_id, email=contact.email, name=contact.name)
            stored = await Recipients.get(tx, user_id)
        if stored is not None and stored.deleted:  # deleted while we asked
            raise RecipientUnknown(f"The account {user_id!r} was deleted")
        return stored or contact

    async def _fetch(self, user_id: str) -> Contact:
        if self.users is None:
            raise DirectoryUnavailable("no users service is configured (NOTIFICATIONS_USERS_URL)")
        try:
            response = await self.users.get(f"/internal/v1/users/{user_id}")
        except MicroshopError as exc:  # no answer, or its circuit is open
            raise DirectoryUnavailable(f"users did not answer: {exc}") from exc
        if response.status == 404:
            raise RecipientUnknown(f"The users service knows no user {user_id!r}")
        if not response.ok:
            raise DirectoryUnavailable(f"users answered {response.status} to the lookup of {user_id!r}")
        try:
            body = response.json()
        except MicroshopError as exc:
            raise DirectoryUnavailable(str(exc)) from exc
        if not isinstance(body, dict):
            raise DirectoryUnavailable(f"users answered the lookup of {user_id!r} with {type(body).__name__}")
        email = str(body.get("email") or "")
        if not email or body.get("active") is False:
            raise RecipientUnknown(f"The user {user_id!r} has no active account with an email address")
        return Contact(user_id=user_id, email=email, name=str(body.get("name") or ""))


def _contact(row: Row) -> Contact:
    return Contact(
        user_id=row["user_id"],
        email=row["email"],
        name=row["name"],
        phone=row["phone"],
        sms_order_updates=bool(row["sms_order_updates"]),
        deleted=bool(row["deleted"]),
    )

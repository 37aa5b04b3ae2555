"""SQL of the users service: accounts, addresses, refresh tokens and sign-in attempts (portable subset:
SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from microshop_kit.db import Database, Row, Tx
from microshop_users.domain import Address, AddressFields, NotificationPreferences, RefreshToken, Role, User
from microshop_users.throttle import Attempts

_USER_COLUMNS = "id, email, name, password_hash, roles, active, created_at, phone, notification_preferences, deleted_at"
_ADDRESS_COLUMNS = (
    "id, user_id, name, line1, line2, city, postal_code, country, phone, is_default, created_at, updated_at"
)
_ATTEMPT_COLUMNS = "failures, last_failure_at, pending, pending_until"
#: Stored in place of the password hash of a deleted account: no argon2 hash, so nothing ever verifies.
NO_PASSWORD = "!"  # noqa: S105 - a marker, not a password


def to_text(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _to_text_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


@dataclass(frozen=True, slots=True)
class Account:
    """A user with the password hash, which never leaves the service."""

    user: User
    password_hash: str


def _preferences(text: str) -> NotificationPreferences:
    stored = json.loads(text or "{}")
    return NotificationPreferences(**{k: bool(v) for k, v in stored.items() if k in NotificationPreferences.__slots__})


def _account(row: Row) -> Account:
    user = User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        roles=tuple(Role(role) for role in json.loads(row["roles"])),
        active=bool(row["active"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        phone=row["phone"],
        preferences=_preferences(row["notification_preferences"]),
        deleted_at=_from_text(row["deleted_at"]),
    )
    return Account(user, row["password_hash"])


def _attempts(row: Row) -> Attempts:
    return Attempts(
        failures=row["failures"],
        last_failure_at=_from_text(row["last_failure_at"]),
        pending=row["pending"],
        pending_until=_from_text(row["pending_until"]),
    )


def _address(row: Row) -> Address:
    fields = AddressFields(
        name=row["name"],
        line1=row["line1"],
        line2=row["line2"],
        city=row["city"],
        postal_code=row["postal_code"],
        country=row["country"],
        phone=row["phone"],
    )
    return Address(
        id=row["id"],
        user_id=row["user_id"],
        fields=fields,
        is_default=bool(row["is_default"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def _address_params(address: Address) -> dict[str, Any]:
    return {
        **asdict(address.fields),
        "id": address.id,
        "user_id": address.user_id,
        "is_default": int(address.is_default),
        "created_at": to_text(address.created_at),
        "updated_at": to_text(address.updated_at),
    }


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _refresh_token(row: Row) -> RefreshToken:
    expires_at = datetime.fromisoformat(row["expires_at"])
    return RefreshToken(
        token_hash=row["token_hash"],
        family_id=row["family_id"],
        user_id=row["user_id"],
        expires_at=expires_at,
        used_at=_from_text(row["used_at"]),
        revoked_at=_from_text(row["revoked_at"]),
    )


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------------------------- accounts

    @staticmethod
    async def add_account(tx: Tx, account: Account) -> bool:
        """Insert the account; False when its email is taken (no exception: the race is a normal outcome)."""
        user = account.user
        inserted = await tx.fetchval(
            "INSERT INTO users (id, email, name, password_hash, roles, active, created_at) "
            "VALUES (:id, :email, :name, :hash, :roles, :active, :created_at) "
            "ON CONFLICT (email) DO NOTHING RETURNING id",
            {
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "hash": account.password_hash,
                "roles": json.dumps([str(role) for role in user.roles]),
                "active": int(user.active),
                "created_at": to_text(user.created_at),
            },
        )
        return inserted is not None

    async def by_email(self, email: str) -> Account | None:
        row = await self.db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = :email", {"email": email})
        return None if row is None else _account(row)

    async def by_id(self, user_id: str) -> Account | None:
        row = await self.db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = :id", {"id": user_id})
        return None if row is None else _account(row)

    @staticmethod
    async def account_in(tx: Tx, user_id: str, *, lock: bool = False) -> Account | None:
        """The account, read in ``tx``; ``lock`` holds its row until commit (serialises a user's changes)."""
        lock_clause = tx.for_update if lock else ""
        row = await tx.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = :id{lock_clause}", {"id": user_id})
        return None if row is None else _account(row)

    @staticmethod
    async def save_profile(tx: Tx, user: User) -> None:
        await tx.execute(
            "UPDATE users SET name = :name, phone = :phone, notification_preferences = :prefs WHERE id = :id",
            {"id": user.id, "name": user.name, "phone": user.phone, "prefs": json.dumps(asdict(user.preferences))},
        )

    @staticmethod
    async def set_password_hash(tx: Tx, user_id: str, password_hash: str) -> None:
        await tx.execute(
            "UPDATE users SET password_hash = :hash WHERE id = :id", {"id": user_id, "hash": password_hash}
        )

    @staticmethod
    async def save_deleted(tx: Tx, user: User) -> None:
        """Store an anonymised account (see ``domain.anonymised``); its password can never match again."""
        assert user.deleted_at is not None
        await tx.execute(
            "UPDATE users SET email = :email, name = :name, phone = NULL, notification_preferences = '{}', "
            "active = 0, deleted_at = :deleted_at, password_hash = :no_password WHERE id = :id",
            {
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "deleted_at": to_text(user.deleted_at),
                "no_password": NO_PASSWORD,
            },
        )

    async def page(self, *, email_contains: str | None, limit: int, offset: int) -> tuple[list[User], int]:
        """Accounts by creation time (newest first), optionally those whose email contains a text."""
        where = ""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if email_contains:
            where = "WHERE email LIKE :pattern ESCAPE '\\'"
            params["pattern"] = _like_pattern(email_contains.strip().lower())
        total = await self.db.fetchval(f"SELECT count(*) FROM users {where}", params)
        rows = await self.db.fetch(
            f"SELECT {_USER_COLUMNS} FROM users {where} ORDER BY created_at DESC, id LIMIT :limit OFFSET :offset",
            params,
        )
        return [_account(row).user for row in rows], int(total)

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        # Conditional, so a rehash racing a password change can never undo the change.
        await self.db.execute(
            "UPDATE users SET password_hash = :new WHERE id = :id AND password_hash = :old",
            {"id": user_id, "old": old_hash, "new": new_hash},
        )

    # ------------------------------------------------------------------------------------- refresh tokens

    @staticmethod
    async def add_refresh_token(tx: Tx, token: RefreshToken, created_at: datetime) -> None:
        await tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at) "
            "VALUES (:hash, :family, :user_id, :expires_at, :created_at)",
            {
                "hash": token.token_hash,
                "family": token.family_id,
                "user_id": token.user_id,
                "expires_at": to_text(token.expires_at),
                "created_at": to_text(created_at),
            },
        )

    @staticmethod
    async def refresh_token(tx: Tx, token_hash: str) -> RefreshToken | None:
        row = await tx.fetchrow(
            "SELECT token_hash, family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens "
            f"WHERE token_hash = :hash{tx.for_update}",
            {"hash": token_hash},
        )
        return None if row is None else _refresh_token(row)

    @staticmethod
    async def mark_used(tx: Tx, token_hash: str, now: datetime) -> bool:
        """Mark a token used; False when it already was (a concurrent rotation won)."""
        changed = await tx.execute(
            "UPDATE refresh_tokens SET used_at = :now "
            "WHERE token_hash = :hash AND used_at IS NULL AND revoked_at IS NULL",
            {"hash": token_hash, "now": to_text(now)},
        )
        return changed == 1

    @staticmethod
    async def revoke_family(tx: Tx, family_id: str, now: datetime) -> int:
        changed: int = await tx.execute(
            "UPDATE refresh_tokens SET revoked_at = :now WHERE family_id = :family AND revoked_at IS NULL",
            {"family": family_id, "now": to_text(now)},
        )
        return changed

    @staticmethod
    async def revoke_user_tokens(tx: Tx, user_id: str, now: datetime, *, keep_family: str | None = None) -> int:
        """Revoke every refresh-token family of a user but ``keep_family``; returns the tokens revoked."""
        changed: int = await tx.execute(
            "UPDATE refresh_tokens SET revoked_at = :now "
            "WHERE user_id = :user_id AND revoked_at IS NULL AND family_id <> :keep",
            {"user_id": user_id, "now": to_text(now), "keep": keep_family or ""},
        )
        return changed

    # ------------------------------------------------------------------------------------------ addresses

    async def addresses(self, user_id: str) -> list[Address]:
        """A user's addresses, the default first, then oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_ADDRESS_COLUMNS} FROM addresses WHERE user_id = :user_id "
            "ORDER BY is_default DESC, created_at, id",
            {"user_id": user_id},
        )
        return [_address(row) for row in rows]

    async def address(self, user_id: str, address_id: str) -> Address | None:
        row = await self.db.fetchrow(
            f"SELECT {_ADDRESS_COLUMNS} FROM addresses WHERE id = :id AND user_id = :user_id",
            {"id": address_id, "user_id": user_id},
        )
        return None if row is None else _address(row)

    @staticmethod
    async def address_in(tx: Tx, user_id: str, address_id: str) -> Address | None:
        # Always scoped by owner: another user's address id finds nothing, exactly like an unknown one.
        row = await tx.fetchrow(
            f"SELECT {_ADDRESS_COLUMNS} FROM addresses WHERE id = :id AND user_id = :user_id",
            {"id": address_id, "user_id": user_id},
        )
        return None if row is None else _address(row)

    @staticmethod
    async def count_addresses(tx: Tx, user_id: str) -> int:
        return int(await tx.fetchval("SELECT count(*) FROM addresses WHERE user_id = :u", {"u": user_id}))

    @staticmethod
    async def add_address(tx: Tx, address: Address) -> None:
        await tx.execute(
            f"INSERT INTO addresses ({_ADDRESS_COLUMNS}) VALUES (:id, :user_id, :name, :line1, :line2, :city, "
            ":postal_code, :country, :phone, :is_default, :created_at, :updated_at)",
            _address_params(address),
        )

    @staticmethod
    async def save_address(tx: Tx, address: Address) -> None:
        await tx.execute(
            "UPDATE addresses SET name = :name, line1 = :line1, line2 = :line2, city = :city, "
            "postal_code = :postal_code, country = :country, phone = :phone, is_default = :is_default, "
            "updated_at = :updated_at WHERE id = :id AND user_id = :user_id",
            _address_params(address),
        )

    @staticmethod
    async def clear_default(tx: Tx, user_id: str) -> None:
        await tx.execute("UPDATE addresses SET is_default = 0 WHERE user_id = :u AND is_default = 1", {"u": user_id})

    @staticmethod
    async def delete_address(tx: Tx, user_id: str, address_id: str) -> None:
        await tx.execute("DELETE FROM addresses WHERE id = :id AND user_id = :u", {"id": address_id, "u": user_id})

    @staticmethod
    async def promote_oldest(tx: Tx, user_id: str) -> None:
        """Make the oldest address the default (after the default was deleted); nothing when none is left."""
        await tx.execute(
            "UPDATE addresses SET is_default = 1 WHERE id = "
            "(SELECT id FROM addresses WHERE user_id = :u ORDER BY created_at, id LIMIT 1)",
            {"u": user_id},
        )

    @staticmethod
    async def delete_addresses(tx: Tx, user_id: str) -> None:
        await tx.execute("DELETE FROM addresses WHERE user_id = :u", {"u": user_id})

    # ------------------------------------------------------------------------------------ sign-in attempts

    @staticmethod
    async def attempts_for_update(tx: Tx, key: str) -> Attempts:
        """The attempts on ``key``, its row locked until commit (created empty first, so PostgreSQL has a row
        to lock even for a key never seen: two first attempts must not both read "nothing pending")."""
        await tx.execute(
            "INSERT INTO login_attempts (account_key, failures, pending) VALUES (:key, 0, 0) "
            "ON CONFLICT (account_key) DO NOTHING",
            {"key": key},
        )
        row = await tx.fetchrow(
            f"SELECT {_ATTEMPT_COLUMNS} FROM login_attempts WHERE account_key = :key{tx.for_update}", {"key": key}
        )
        return Attempts() if row is None else _attempts(row)

    @staticmethod
    async def save_attempts(tx: Tx, key: str, attempts: Attempts) -> None:
        await tx.execute(
            "INSERT INTO login_attempts (account_key, failures, last_failure_at, pending, pending_until) "
            "VALUES (:key, :failures, :last, :pending, :until) ON CONFLICT (account_key) DO UPDATE SET "
            "failures = :failures, last_failure_at = :last, pending = :pending, pending_until = :until",
            {
                "key": key,
                "failures": attempts.failures,
                "last": _to_text_or_none(attempts.last_failure_at),
                "pending": attempts.pending,
                "until": _to_text_or_none(attempts.pending_until),
            },
        )

    @staticmethod
    async def forget_attempts(tx: Tx, key: str) -> None:
        await tx.execute("DELETE FROM login_attempts WHERE account_key = :key", {"key": key})

    async def attempts_of(self, keys: Sequence[str]) -> dict[str, Attempts]:
        if not keys:
            return {}
        names = {f"k{i}": key for i, key in enumerate(keys)}
        rows = await self.db.fetch(
            f"SELECT account_key, {_ATTEMPT_COLUMNS} FROM login_attempts "
            f"WHERE account_key IN ({', '.join(':' + name for name in names)})",
            names,
        )
        return {row["account_key"]: _attempts(row) for row in rows}

    async def prune_attempts(self, *, forgotten_before: datetime, now: datetime) -> int:
        """Delete attempts whose failures are forgotten anyway and that have no check running."""
        return await self.db.execute(
            "DELETE FROM login_attempts WHERE (last_failure_at IS NULL OR last_failure_at < :forgotten) "
            "AND (pending_until IS NULL OR pending_until < :now)",
            {"forgotten": to_text(forgotten_before), "now": to_text(now)},
        )

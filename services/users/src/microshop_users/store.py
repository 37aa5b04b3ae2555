"""SQL of the users service: accounts and refresh tokens (portable subset: SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from microshop_kit.db import Database, Row, Tx
from microshop_users.domain import RefreshToken, Role, User

_USER_COLUMNS = "id, email, name, password_hash, roles, active, created_at"


def to_text(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class Account:
    """A user with the password hash, which never leaves the service."""

    user: User
    password_hash: str


def _account(row: Row) -> Account:
    user = User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        roles=tuple(Role(role) for role in json.loads(row["roles"])),
        active=bool(row["active"]),
        created_at=datetime.fromisoformat(row["created_at"]),
    )
    return Account(user, row["password_hash"])


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
    async def account_in(tx: Tx, user_id: str) -> Account | None:
        row = await tx.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = :id", {"id": user_id})
        return None if row is None else _account(row)

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

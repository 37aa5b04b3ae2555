"""Use cases of the users service: register, sign in, rotate and revoke refresh tokens, read accounts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from microshop_contracts import UserRegistered
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Tx
from microshop_kit.log import get_logger
from microshop_users import domain
from microshop_users.domain import (
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidRefreshToken,
    RefreshState,
    RefreshToken,
    Role,
    User,
    UserNotFound,
)
from microshop_users.passwords import PasswordHasher
from microshop_users.settings import UsersSettings
from microshop_users.store import Account, UserStore
from microshop_users.tokens import KeyRing, issue_access_token

log = get_logger("microshop.users")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class Accounts:
    """Registration and reading accounts."""

    def __init__(
        self, db: Database, hasher: PasswordHasher, outbox: Outbox, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.db = db
        self.store = UserStore(db)
        self.hasher = hasher
        self.outbox = outbox
        self.clock = clock

    async def register(self, *, email: str, password: str, name: str, roles: Sequence[Role] = (Role.CUSTOMER,)) -> User:
        """Create an account and publish ``UserRegistered`` with it; raises EmailTaken and policy errors."""
        user = User(
            id=str(uuid.uuid4()),
            email=domain.normalise_email(email),
            name=domain.normalise_name(name),
            roles=tuple(roles),
            active=True,
            created_at=self.clock(),
        )
        domain.check_password(password)
        # Hash before the transaction: SQLite has one writer, and 50 ms of argon2 must not hold it.
        account = Account(user, await self.hasher.hash(password))
        async with self.db.transaction() as tx:
            if not await self.store.add_account(tx, account):
                raise EmailTaken(user.email)
            await self.outbox.add(tx, UserRegistered(user_id=user.id, email=user.email, name=user.name))
        log.info("user registered", user_id=user.id, roles=[str(r) for r in user.roles])
        return user

    async def get(self, user_id: str) -> User:
        account = await self.store.by_id(user_id)
        if account is None:
            raise UserNotFound(user_id)
        return account.user


class Sessions:
    """Sign-in, refresh-token rotation and revocation, and the keys access tokens are signed with."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        keys: KeyRing,
        settings: UsersSettings,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.store = UserStore(db)
        self.hasher = hasher
        self.keys = keys
        self.settings = settings
        self.clock = clock

    # ------------------------------------------------------------------------------------------- sessions

    async def sign_in(self, *, email: str, password: str) -> TokenPair:
        """Tokens for a correct email and password; InvalidCredentials otherwise, in the same time."""
        try:
            account = await self.store.by_email(domain.normalise_email(email))
        except InvalidEmail:
            account = None
        # Always one argon2 verification (against a dummy hash when the email is unknown), so the answer
        # time does not tell which emails have accounts.
        matches = await self.hasher.verify(account.password_hash if account else None, password)
        if account is None or not matches or not account.user.active:
            raise InvalidCredentials()
        if self.hasher.needs_rehash(account.password_hash):
            await self.store.replace_password_hash(
                account.user.id, account.password_hash, await self.hasher.hash(password)
            )
        now = self.clock()
        async with self.db.transaction() as tx:
            refresh = await self._add_refresh_token(tx, account.user.id, str(uuid.uuid4()), now)
        return self._token_pair(account.user, refresh, now)

    async def refresh(self, token: str) -> TokenPair:
        """Rotate a refresh token: the old one is spent, a new one of the same family comes back."""
        now = self.clock()
        async with self.db.transaction() as tx:
            rotated = await self._rotate(tx, domain.refresh_token_hash(token), now)
        # Raised only after the commit: a reuse must leave its family revoked, not rolled back.
        if rotated is None:
            raise InvalidRefreshToken()
        user, refresh = rotated
        return self._token_pair(user, refresh, now)

    async def sign_out(self, token: str) -> None:
        """Revoke the token's whole family; an unknown token is not an error (RFC 7009, section 2.2)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            current = await self.store.refresh_token(tx, domain.refresh_token_hash(token))
            if current is not None:
                await self.store.revoke_family(tx, current.family_id, now)

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    # ------------------------------------------------------------------------------------------- internals

    async def _rotate(self, tx: Tx, token_hash: str, now: datetime) -> tuple[User, str] | None:
        current = await self.store.refresh_token(tx, token_hash)
        if current is None:
            return None
        state = current.state(now)
        if state is RefreshState.REUSED:
            log.warning("refresh token reused: family revoked", user_id=current.user_id, family=current.family_id)
            await self.store.revoke_family(tx, current.family_id, now)
            return None
        if state is not RefreshState.VALID:
            return None
        account = await self.store.account_in(tx, current.user_id)
        if not await self.store.mark_used(tx, token_hash, now) or account is None or not account.user.active:
            await self.store.revoke_family(tx, current.family_id, now)
            return None
        return account.user, await self._add_refresh_token(tx, current.user_id, current.family_id, now)

    async def _add_refresh_token(self, tx: Tx, user_id: str, family_id: str, now: datetime) -> str:
        secret = domain.new_refresh_secret()
        token = RefreshToken(
            token_hash=domain.refresh_token_hash(secret),
            family_id=family_id,
            user_id=user_id,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl),
            used_at=None,
            revoked_at=None,
        )
        await self.store.add_refresh_token(tx, token, now)
        return secret

    def _token_pair(self, user: User, refresh: str, now: datetime) -> TokenPair:
        ttl = self.settings.access_token_ttl
        access = issue_access_token(
            self.keys.signing_key(),
            user,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            ttl=ttl,
            now=now,
        )
        return TokenPair(access_token=access, expires_in=ttl, refresh_token=refresh)

"""Use cases of the users service: register, sign in (throttled), tokens, profile, password change, account
deletion. Addresses and the admin views are in ``addresses.py`` and ``admin.py``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from microshop_contracts import UserContactChanged, UserDeleted, UserRegistered
from microshop_kit.bus import Outbox
from microshop_kit.db import Database, Tx
from microshop_kit.log import get_logger
from microshop_users import domain, throttle
from microshop_users.domain import (
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidRefreshToken,
    ProfileChange,
    RefreshState,
    RefreshToken,
    Role,
    User,
    UserNotFound,
    WrongPassword,
)
from microshop_users.passwords import PasswordHasher
from microshop_users.settings import UsersSettings
from microshop_users.store import Account, UserStore
from microshop_users.throttle import ThrottlePolicy, account_key
from microshop_users.tokens import KeyRing, issue_access_token

log = get_logger("microshop.users")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class SignInGate:
    """Admits password checks per account (``throttle.py``) and records how they ended. Every check of a
    password, at sign-in or to confirm a change, passes here, so a stolen access token gives no faster way
    to guess the password than the sign-in form."""

    def __init__(self, db: Database, policy: ThrottlePolicy, *, prune_every: float = 60.0) -> None:
        self.db = db
        self.store = UserStore(db)
        self.policy = policy
        self.prune_every = timedelta(seconds=prune_every)
        self._next_prune: datetime | None = None

    async def admit(self, key: str, now: datetime) -> None:
        """Admit one check on ``key`` (counted as pending until it ends); raises SignInRefused."""
        async with self.db.transaction() as tx:
            attempts = await self.store.attempts_for_update(tx, key)
            await self.store.save_attempts(tx, key, throttle.admit(self.policy, attempts, now))
        if self._next_prune is None or now >= self._next_prune:
            # Keeps the table bounded: a row lives until its failures are forgotten, then goes.
            self._next_prune = now + self.prune_every
            forgotten = now - timedelta(seconds=self.policy.lockout_seconds)
            await self.store.prune_attempts(forgotten_before=forgotten, now=now)

    async def failed(self, key: str, now: datetime) -> None:
        """The admitted check found a wrong password."""
        async with self.db.transaction() as tx:
            attempts = await self.store.attempts_for_update(tx, key)
            await self.store.save_attempts(tx, key, throttle.failed(self.policy, attempts, now))

    async def forget(self, tx: Tx, key: str) -> None:
        """The admitted check found the right password: the account's failures start again from zero."""
        await self.store.forget_attempts(tx, key)


class Accounts:
    """Registration, the owner's profile, password change and account deletion."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        outbox: Outbox,
        *,
        policy: ThrottlePolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.store = UserStore(db)
        self.hasher = hasher
        self.outbox = outbox
        self.gate = SignInGate(db, policy or ThrottlePolicy())
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
        """A live account; a deleted one is reported as not found."""
        account = await self.store.by_id(user_id)
        if account is None or account.user.deleted:
            raise UserNotFound(user_id)
        return account.user

    async def update_profile(self, user_id: str, change: ProfileChange) -> User:
        async with self.db.transaction() as tx:
            account = await self._live_account(tx, user_id)
            user = domain.change_profile(account.user, change)
            await self.store.save_profile(tx, user)
            if user != account.user:  # a no-op change tells nobody anything
                contact = UserContactChanged(
                    user_id=user.id,
                    email=user.email,
                    name=user.name,
                    phone=user.phone,
                    email_marketing=user.preferences.email_marketing,
                    sms_order_updates=user.preferences.sms_order_updates,
                )
                await self.outbox.add(tx, contact)
        return user

    async def change_password(
        self, user_id: str, *, current: str, new: str, keep_refresh_token: str | None = None
    ) -> int:
        """Replace the password and revoke every refresh-token family of the account except the one of
        ``keep_refresh_token`` (when it is a live token of this account); returns the tokens revoked."""
        domain.check_password(new)
        account = await self._confirmed(user_id, current)
        new_hash = await self.hasher.hash(new)
        now = self.clock()
        async with self.db.transaction() as tx:
            locked = await self._live_account(tx, user_id)
            if locked.password_hash != account.password_hash:
                raise WrongPassword()  # changed meanwhile by another request: ``current`` may be stale
            keep = await self._live_family(tx, user_id, keep_refresh_token, now)
            await self.store.set_password_hash(tx, user_id, new_hash)
            revoked = await self.store.revoke_user_tokens(tx, user_id, now, keep_family=keep)
        log.info("password changed", user_id=user_id, tokens_revoked=revoked, session_kept=keep is not None)
        return revoked

    async def delete(self, user_id: str, *, password: str) -> None:
        """Anonymise the account, drop its addresses, revoke every token, publish ``UserDeleted``."""
        await self._confirmed(user_id, password)
        now = self.clock()
        async with self.db.transaction() as tx:
            locked = await self._live_account(tx, user_id)
            await self.store.save_deleted(tx, domain.anonymised(locked.user, now))
            await self.store.delete_addresses(tx, user_id)
            await self.store.revoke_user_tokens(tx, user_id, now)
            await self.outbox.add(tx, UserDeleted(user_id=user_id))
        log.info("user deleted", user_id=user_id)

    async def _confirmed(self, user_id: str, password: str) -> Account:
        """The account, once ``password`` proved to be its password (throttled like a sign-in)."""
        account = await self.store.by_id(user_id)
        if account is None or account.user.deleted:
            raise UserNotFound(user_id)
        key = account_key(account.user.email)
        await self.gate.admit(key, self.clock())
        if not await self.hasher.verify(account.password_hash, password):
            await self.gate.failed(key, self.clock())
            raise WrongPassword()
        async with self.db.transaction() as tx:
            await self.gate.forget(tx, key)
        return account

    async def _live_account(self, tx: Tx, user_id: str) -> Account:
        account = await self.store.account_in(tx, user_id, lock=True)
        if account is None or account.user.deleted:
            raise UserNotFound(user_id)
        return account

    async def _live_family(self, tx: Tx, user_id: str, token: str | None, now: datetime) -> str | None:
        if token is None:
            return None
        current = await self.store.refresh_token(tx, domain.refresh_token_hash(token))
        if current is None or current.user_id != user_id or current.state(now) is not RefreshState.VALID:
            return None
        return current.family_id


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
        self.gate = SignInGate(db, settings.throttle_policy())
        self.clock = clock

    # ------------------------------------------------------------------------------------------- sessions

    async def sign_in(self, *, email: str, password: str) -> TokenPair:
        """Tokens for a correct email and password; InvalidCredentials otherwise, in the same time.
        Throttled per account (SignInRefused), for emails without an account exactly alike."""
        key = account_key(email)
        await self.gate.admit(key, self.clock())
        try:
            account = await self.store.by_email(domain.normalise_email(email))
        except InvalidEmail:
            account = None
        # Always one argon2 verification (against a dummy hash when the email is unknown), so the answer
        # time does not tell which emails have accounts.
        matches = await self.hasher.verify(account.password_hash if account else None, password)
        if account is None or not matches or not account.user.active:
            await self.gate.failed(key, self.clock())
            raise InvalidCredentials()
        if self.hasher.needs_rehash(account.password_hash):
            await self.store.replace_password_hash(
                account.user.id, account.password_hash, await self.hasher.hash(password)
            )
        now = self.clock()
        async with self.db.transaction() as tx:
            await self.gate.forget(tx, key)
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

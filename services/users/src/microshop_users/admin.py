"""Use cases of the admin views: find accounts, read one with its sign-in state, lift a lockout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from microshop_kit.db import Database
from microshop_kit.log import get_logger
from microshop_users.domain import User, UserNotFound
from microshop_users.handlers import utc_now
from microshop_users.store import UserStore
from microshop_users.throttle import Attempts, ThrottlePolicy, account_key, current_failures, locked_until

log = get_logger("microshop.users.admin")


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """An account as an admin sees it: the user (deleted ones too) and its sign-in throttling state."""

    user: User
    failed_sign_ins: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class AccountPage:
    items: list[AccountStatus]
    total: int


class Admin:
    def __init__(self, db: Database, policy: ThrottlePolicy, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.store = UserStore(db)
        self.policy = policy
        self.clock = clock

    async def page(self, *, email_contains: str | None, page: int, limit: int) -> AccountPage:
        users, total = await self.store.page(email_contains=email_contains, limit=limit, offset=(page - 1) * limit)
        attempts = await self.store.attempts_of([account_key(user.email) for user in users])
        now = self.clock()
        return AccountPage([self._status(u, attempts.get(account_key(u.email)), now) for u in users], total)

    async def get(self, user_id: str) -> AccountStatus:
        account = await self.store.by_id(user_id)
        if account is None:
            raise UserNotFound(user_id)
        key = account_key(account.user.email)
        attempts = await self.store.attempts_of([key])
        return self._status(account.user, attempts.get(key), self.clock())

    async def unlock(self, user_id: str, *, by: str) -> AccountStatus:
        """Forget the account's failed sign-ins, which lifts a lockout or a delay at once."""
        account = await self.store.by_id(user_id)
        if account is None:
            raise UserNotFound(user_id)
        async with self.db.transaction() as tx:
            await self.store.forget_attempts(tx, account_key(account.user.email))
        log.info("account unlocked", user_id=user_id, admin_id=by)
        return AccountStatus(account.user, 0, None)

    def _status(self, user: User, attempts: Attempts | None, now: datetime) -> AccountStatus:
        if attempts is None:
            return AccountStatus(user, 0, None)
        failures = current_failures(self.policy, attempts, now)
        return AccountStatus(user, failures, locked_until(self.policy, attempts, now))

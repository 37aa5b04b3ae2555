"""Sign-in throttling per account: exponential delays after a few failures, then a lockout (no I/O).

Counted per account (the normalised email), never per client address, so a botnet spreading its guesses
over many IPs gets no more of them. Emails without an account are counted exactly like real ones: the
answers (and their timing) never tell whether an account exists.

The guarantee is a budget: at most ``lockout_failures`` password checks fail before the account locks,
however the attempts are timed. Checks still running count against it (``pending``), so a burst of
parallel guesses cannot all be admitted before the first one is recorded as failed; once the delays have
begun, checks run one at a time. Parallel sign-ins with the right password (several devices, a load test
on one account) are admitted while the account has no failures, up to that same budget.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from microshop_users.domain import UsersError

#: How long an admitted check may run before it stops counting as pending (a process that died mid-check
#: must not hold the budget forever). Far above an argon2 verification, queueing included.
PENDING_SECONDS = 30.0
#: Retry-After when the budget is taken by checks still running: they finish within milliseconds.
BUSY_RETRY_SECONDS = 1.0


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    THROTTLED = "throttled"  # within the delay after recent failures: retry after it
    LOCKED = "locked"  # too many failures: locked for the lockout period (or until an admin unlocks)


class SignInRefused(UsersError):
    """An attempt refused without checking the password (throttled or locked); says when to retry."""

    def __init__(self, verdict: Verdict, retry_after: float) -> None:
        super().__init__(f"sign-in {verdict.value}: retry after {retry_after:.1f} s")
        self.verdict = verdict
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    #: Failures answered without delay.
    free_failures: int = 3
    #: Delay after the first failure past the free ones, in seconds; it doubles with each further failure.
    base_delay: float = 1.0
    #: Consecutive failures that lock the account.
    lockout_failures: int = 10
    #: How long a lockout lasts, and how long a failure is remembered, in seconds.
    lockout_seconds: float = 900.0

    def wait_after(self, failures: int) -> float:
        """Seconds no attempt is admitted after the ``failures``-th consecutive failure."""
        if failures >= self.lockout_failures:
            return self.lockout_seconds
        if failures < self.free_failures:
            return 0.0
        return float(min(self.base_delay * 2 ** (failures - self.free_failures), self.lockout_seconds))


@dataclass(frozen=True, slots=True)
class Attempts:
    """Password checks on one account key: consecutive failures, the time of the last one, and the checks
    admitted but not finished yet (``pending``, counted until ``pending_until``)."""

    failures: int = 0
    last_failure_at: datetime | None = None
    pending: int = 0
    pending_until: datetime | None = None


def _current(policy: ThrottlePolicy, attempts: Attempts, now: datetime) -> Attempts:
    """The attempts with forgotten failures and expired pending checks dropped."""
    if current_failures(policy, attempts, now) == 0:
        attempts = replace(attempts, failures=0, last_failure_at=None)
    if attempts.pending_until is None or attempts.pending_until <= now:
        attempts = replace(attempts, pending=0, pending_until=None)
    return attempts


def admit(policy: ThrottlePolicy, attempts: Attempts, now: datetime) -> Attempts:
    """The attempts to store when one more check is admitted; raises SignInRefused when it must wait."""
    attempts = _current(policy, attempts, now)
    failures, last = attempts.failures, attempts.last_failure_at
    if failures and last is not None:
        wait = (last + timedelta(seconds=policy.wait_after(failures)) - now).total_seconds()
        if wait > 0:
            verdict = Verdict.LOCKED if failures >= policy.lockout_failures else Verdict.THROTTLED
            raise SignInRefused(verdict, wait)
    one_at_a_time = failures >= policy.free_failures
    if (one_at_a_time and attempts.pending) or failures + attempts.pending >= policy.lockout_failures:
        raise SignInRefused(Verdict.THROTTLED, BUSY_RETRY_SECONDS)
    return replace(attempts, pending=attempts.pending + 1, pending_until=now + timedelta(seconds=PENDING_SECONDS))


def failed(policy: ThrottlePolicy, attempts: Attempts, now: datetime) -> Attempts:
    """The attempts to store once an admitted check found the password wrong."""
    attempts = _current(policy, attempts, now)
    pending = max(0, attempts.pending - 1)
    return replace(
        attempts,
        failures=attempts.failures + 1,
        last_failure_at=now,
        pending=pending,
        pending_until=attempts.pending_until if pending else None,
    )


def current_failures(policy: ThrottlePolicy, attempts: Attempts, now: datetime) -> int:
    """The consecutive failures still remembered (0 once the last one is older than the lockout)."""
    last = attempts.last_failure_at
    if last is None or now - last >= timedelta(seconds=policy.lockout_seconds):
        return 0
    return attempts.failures


def locked_until(policy: ThrottlePolicy, attempts: Attempts, now: datetime) -> datetime | None:
    """When the lockout of these attempts ends; None when they are not locked."""
    last = attempts.last_failure_at
    if last is None or attempts.failures < policy.lockout_failures:
        return None
    until = last + timedelta(seconds=policy.lockout_seconds)
    return until if until > now else None


def account_key(email: str) -> str:
    """The key attempts on an email are counted under: a hash, so the table never holds the typed emails
    of accounts that do not exist. Same normalisation as accounts (trim, lower-case)."""
    return hashlib.sha256(b"sign-in:" + email.strip().lower().encode()).hexdigest()

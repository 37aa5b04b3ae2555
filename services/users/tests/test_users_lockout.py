"""Sign-in throttling per account: delays after 3 failures, lockout after 10, the same for unknown emails."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from microshop_users.throttle import (
    PENDING_SECONDS,
    Attempts,
    SignInRefused,
    ThrottlePolicy,
    Verdict,
    admit,
    failed,
    locked_until,
)

if TYPE_CHECKING:
    from conftest import UsersApp

PASSWORD = "correct-horse-battery"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """The users app's clock, moved by hand (delays of minutes pass in no time)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(users: UsersApp) -> Clock:
    clock = Clock()
    for name in ("sessions", "accounts", "admin"):
        getattr(users.app.state, name).clock = clock
    return clock


Answer = tuple[int, str | None, str | None]  # status, problem type, Retry-After


async def _try(users: UsersApp, password: str, email: str = "ada@example.com") -> Answer:
    response = await users.client.post("/api/v1/auth/token", json={"email": email, "password": password})
    problem: dict[str, Any] = response.json() if response.status_code != 200 else {}
    return response.status_code, problem.get("type"), response.headers.get("retry-after")


async def _fail(users: UsersApp, clock: Clock, count: int, email: str = "ada@example.com") -> list[Answer]:
    """Fail ``count`` password checks, waiting out each delay as a patient attacker would."""
    answers: list[Answer] = []
    while sum(1 for status, _, _ in answers if status == 401) < count:
        answer = await _try(users, "wrong-password-guess", email)
        answers.append(answer)
        if answer[0] == 429:
            clock.advance(float(answer[2] or 0))
    return answers


# ------------------------------------------------------------------------------------------- the policy


def test_delays_double_after_the_free_failures_and_the_tenth_locks() -> None:
    policy = ThrottlePolicy()

    assert [policy.wait_after(n) for n in range(1, 11)] == [0, 0, 1, 2, 4, 8, 16, 32, 64, 900]


def _pending(count: int, at: datetime = NOW) -> dict[str, Any]:
    return {"pending": count, "pending_until": at + timedelta(seconds=PENDING_SECONDS)}


def test_an_admitted_check_is_pending_until_it_fails() -> None:
    policy = ThrottlePolicy()

    admitted = admit(policy, Attempts(), NOW)
    later = NOW + timedelta(seconds=0.05)

    assert admitted == Attempts(0, None, **_pending(1))
    assert failed(policy, admitted, later) == Attempts(1, later, 0, None)


def test_a_refusal_during_a_delay_says_how_long_to_wait() -> None:
    policy = ThrottlePolicy()

    with pytest.raises(SignInRefused) as refused:
        admit(policy, Attempts(4, NOW), NOW + timedelta(seconds=0.5))

    assert (refused.value.verdict, refused.value.retry_after) == (Verdict.THROTTLED, 1.5)
    two_s = NOW + timedelta(seconds=2)
    assert admit(policy, Attempts(4, NOW), two_s) == Attempts(4, NOW, **_pending(1, two_s))


def test_checks_still_running_count_against_the_budget() -> None:
    policy = ThrottlePolicy()

    assert admit(policy, Attempts(2, NOW, 7, NOW + timedelta(seconds=5)), NOW).pending == 8  # 2 + 8 = 10 checks
    with pytest.raises(SignInRefused):  # an eleventh check could run before the tenth failure is recorded
        admit(policy, Attempts(2, NOW, 8, NOW + timedelta(seconds=5)), NOW)
    with pytest.raises(SignInRefused):  # once delays began, one check at a time
        admit(policy, Attempts(3, NOW, 1, NOW + timedelta(seconds=5)), NOW + timedelta(seconds=1))
    # A check that never ended (its process died) stops counting after PENDING_SECONDS.
    stale = Attempts(3, NOW, 1, NOW + timedelta(seconds=PENDING_SECONDS))
    assert admit(policy, stale, NOW + timedelta(seconds=PENDING_SECONDS)).pending == 1


def test_a_lockout_ends_and_old_failures_are_forgotten() -> None:
    policy = ThrottlePolicy()
    locked = Attempts(10, NOW)

    assert locked_until(policy, locked, NOW) == NOW + timedelta(minutes=15)
    with pytest.raises(SignInRefused) as refused:
        admit(policy, locked, NOW + timedelta(minutes=14))
    assert refused.value.verdict is Verdict.LOCKED
    later = NOW + timedelta(minutes=15)
    assert locked_until(policy, locked, later) is None
    assert admit(policy, locked, later) == Attempts(0, None, **_pending(1, later))  # a fresh start
    assert failed(policy, Attempts(5, NOW), later) == Attempts(1, later)


# ------------------------------------------------------------------------------------------- through HTTP


async def test_after_three_failures_each_attempt_waits_twice_as_long(users: UsersApp, clock: Clock) -> None:
    await users.register()

    first = [await _try(users, "wrong-password-guess") for _ in range(3)]
    too_soon = await _try(users, PASSWORD)  # even the right password is not checked during the delay
    clock.advance(1)
    fourth = await _try(users, "wrong-password-guess")
    then = await _try(users, PASSWORD)

    assert first == [(401, "/problems/invalid-credentials", None)] * 3
    assert too_soon == (429, "/problems/sign-in-throttled", "1")
    assert fourth[0] == 401
    assert then == (429, "/problems/sign-in-throttled", "2")


async def test_ten_consecutive_failures_lock_the_account_for_fifteen_minutes(users: UsersApp, clock: Clock) -> None:
    await users.register()
    started = clock.now

    await _fail(users, clock, 10)
    locked = await _try(users, PASSWORD)

    assert clock.now - started == timedelta(seconds=1 + 2 + 4 + 8 + 16 + 32 + 64)  # what the guesses cost
    assert locked == (429, "/problems/account-locked", "900")
    clock.advance(899)
    assert (await _try(users, PASSWORD))[:2] == (429, "/problems/account-locked")
    clock.advance(1)
    assert (await _try(users, PASSWORD))[0] == 200


async def test_a_success_resets_the_count(users: UsersApp, clock: Clock) -> None:
    await users.register()
    await _fail(users, clock, 2)
    assert (await _try(users, PASSWORD))[0] == 200

    answers = [await _try(users, "wrong-password-guess") for _ in range(3)]

    assert [status for status, _, _ in answers] == [401, 401, 401]  # three free failures again


async def test_an_email_without_account_gets_exactly_the_same_answers(users: UsersApp, clock: Clock) -> None:
    await users.register()

    known = await _fail(users, clock, 10, "ada@example.com")
    known.append(await _try(users, PASSWORD, "ada@example.com"))
    unknown = await _fail(users, clock, 10, "nobody@example.com")
    unknown.append(await _try(users, PASSWORD, "nobody@example.com"))

    assert known == unknown
    assert known[-1][:2] == (429, "/problems/account-locked")


async def test_locking_one_account_leaves_the_others_alone(users: UsersApp, clock: Clock) -> None:
    await users.register()
    await users.register(email="bob@example.com", name="Bob")

    await _fail(users, clock, 10)

    assert (await _try(users, PASSWORD))[1] == "/problems/account-locked"
    assert (await _try(users, PASSWORD, "bob@example.com"))[0] == 200
    assert (await _try(users, PASSWORD, " ADA@example.com"))[1] == "/problems/account-locked"  # same account


async def test_a_burst_of_parallel_guesses_gets_ten_checks_and_then_the_lock(users: UsersApp, clock: Clock) -> None:
    await users.register()

    answers = await asyncio.gather(*(_try(users, f"guess-{n}-wrong-password") for n in range(25)))

    # Checks still running count against the budget, so no burst gets more than ten guesses checked.
    assert sorted(status for status, _, _ in answers) == [401] * 10 + [429] * 15
    assert (await _try(users, PASSWORD))[1] == "/problems/account-locked"


async def test_parallel_sign_ins_with_the_right_password_all_succeed(users: UsersApp, clock: Clock) -> None:
    await users.register()

    answers = await asyncio.gather(*(_try(users, PASSWORD) for _ in range(8)))  # several devices at once

    assert [status for status, _, _ in answers] == [200] * 8


async def test_forgotten_attempts_are_pruned_so_the_table_stays_bounded(users: UsersApp, clock: Clock) -> None:
    db = users.app.state.kit.database
    await asyncio.gather(*(_try(users, "wrong-password", f"{uuid.uuid4().hex}@example.com") for _ in range(12)))
    crashed_until = (clock.now + timedelta(seconds=PENDING_SECONDS)).isoformat()  # a check whose process died
    await db.execute(
        "INSERT INTO login_attempts (account_key, failures, pending, pending_until) VALUES ('k', 0, 1, :until)",
        {"until": crashed_until},
    )
    assert await db.fetchval("SELECT count(*) FROM login_attempts") == 13

    clock.advance(users.settings.login_lockout_seconds + 60)
    await _try(users, "wrong-password-guess", "last@example.com")

    assert await db.fetchval("SELECT count(*) FROM login_attempts") == 1
    stored = [row["account_key"] for row in await db.fetch("SELECT account_key FROM login_attempts")]
    assert "last@example.com" not in stored[0]  # a hash: typed emails of no account are not kept

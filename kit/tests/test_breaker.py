"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from microshop_kit.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(min_calls=5, failure_ratio=0.5, open_seconds=5.0, window_seconds=10.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def succeed(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_success()


def test_stays_closed_below_min_calls_even_if_all_fail(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state == "closed"
    assert breaker.allow()


def test_opens_when_failure_ratio_reached_over_min_calls(breaker: CircuitBreaker) -> None:
    succeed(breaker, 3)
    fail(breaker, 2)
    assert breaker.state == "closed"  # 2 of 5 failed: 40%
    fail(breaker, 1)
    assert breaker.state == "open"  # 3 of 6 failed: 50%
    assert not breaker.allow()


def test_stays_closed_while_failures_are_a_minority(breaker: CircuitBreaker) -> None:
    for _ in range(10):
        succeed(breaker, 2)
        fail(breaker, 1)
    assert breaker.state == "closed"


def test_failures_older_than_the_window_are_forgotten(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 4)
    clock.advance(11)
    fail(breaker, 1)
    assert breaker.state == "closed"  # only one recent call


def test_window_keeps_only_the_last_calls(clock: FakeClock) -> None:
    breaker = CircuitBreaker(min_calls=5, window_size=10, clock=clock)
    fail(breaker, 4)
    succeed(breaker, 10)  # pushes the four failures out of the last ten calls
    fail(breaker, 4)
    assert breaker.state == "closed"  # 4 of the last 10
    fail(breaker, 1)
    assert breaker.state == "open"  # 5 of the last 10


def test_open_turns_half_open_after_open_seconds(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    clock.advance(4.9)
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == "half_open"


def test_half_open_lets_one_probe_through_then_successful_probe_closes(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 5)
    clock.advance(5)
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_failed_probe_opens_again_for_open_seconds(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_closing_starts_a_fresh_window(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    clock.advance(5)
    succeed(breaker, 1)
    fail(breaker, 4)
    assert breaker.state == "closed"  # the failures before opening do not count again


def test_probe_that_never_reports_frees_its_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    clock.advance(5)
    assert breaker.allow()  # this caller gets cancelled and never records
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_several_probes_must_all_succeed_to_close(clock: FakeClock) -> None:
    breaker = CircuitBreaker(half_open_probes=2, clock=clock)
    fail(breaker, 5)
    clock.advance(5)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "half_open"
    breaker.record_success()
    assert breaker.state == "closed"


def test_late_results_while_open_change_nothing(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 5)
    breaker.record_success()
    breaker.record_failure()
    clock.advance(5)
    assert breaker.state == "half_open"  # a late failure did not restart the open period


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_ratio": 0},
        {"failure_ratio": 1.5},
        {"min_calls": 0},
        {"min_calls": 30},
        {"half_open_probes": 0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]

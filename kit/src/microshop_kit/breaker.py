"""A small circuit breaker for one upstream: stop calling it while it is failing, probe it to recover.

Hand-written on purpose: no maintained library fits asyncio cleanly. pybreaker's async path is Tornado-only
(native asyncio support is still an open pull request), aiobreaker is unmaintained, and purgatory and
circuitbreaker trip on a failure count rather than a failure ratio over a rolling window. This one does no I/O
and never awaits, so on one event loop each method is atomic without a lock.

Closed: calls pass; the outcomes of the last ``window_size`` calls within ``window_seconds`` are kept. When at
least ``min_calls`` of them are recorded and the failure ratio is >= ``failure_ratio``, the breaker opens.
Open: ``allow()`` is False (callers fail fast) for ``open_seconds``.
Half-open: up to ``half_open_probes`` trial calls pass; a failure opens again, ``half_open_probes`` successes
close it. A probe that never reports (its caller was cancelled) frees its slot after ``open_seconds``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Failure-ratio circuit breaker; see the module docstring for the state machine."""

    def __init__(
        self,
        *,
        failure_ratio: float = 0.5,
        min_calls: int = 5,
        window_size: int = 20,
        window_seconds: float = 10.0,
        open_seconds: float = 5.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {failure_ratio!r}")
        if min_calls < 1 or window_size < min_calls:
            raise ValueError(f"need 1 <= min_calls <= window_size, got {min_calls!r} and {window_size!r}")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes must be >= 1, got {half_open_probes!r}")
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.window_seconds = window_seconds
        self.open_seconds = open_seconds
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._window: deque[tuple[float, bool]] = deque(maxlen=window_size)  # (when, failed)
        self._state: State = "closed"
        self._opened_at = 0.0
        self._probes_started = 0
        self._probe_deadline = 0.0
        self._probe_successes = 0

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open`` (open turns half-open once ``open_seconds`` have passed)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
            self._state = "half_open"
            self._probes_started = 0
            self._probe_successes = 0
        return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open state a True answer takes one probe slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        now = self._clock()
        if self._probes_started >= self.half_open_probes and now < self._probe_deadline:
            return False
        if now >= self._probe_deadline:  # earlier probes never reported: free their slots
            self._probes_started = 0
        self._probes_started += 1
        self._probe_deadline = now + self.open_seconds
        return True

    def record_success(self) -> None:
        state = self.state
        if state == "closed":
            self._record(failed=False)
        elif state == "half_open":
            self._probe_successes += 1
            if self._probe_successes >= self.half_open_probes:
                self._close()

    def record_failure(self) -> None:
        state = self.state
        if state == "closed":
            self._record(failed=True)
            if self._should_trip():
                self._open()
        elif state == "half_open":
            self._open()
        # While open, a late failure from a call started before opening changes nothing.

    def _record(self, *, failed: bool) -> None:
        now = self._clock()
        self._window.append((now, failed))
        while self._window and now - self._window[0][0] > self.window_seconds:
            self._window.popleft()

    def _should_trip(self) -> bool:
        calls = len(self._window)
        failures = sum(1 for _, failed in self._window if failed)
        return calls >= self.min_calls and failures >= self.failure_ratio * calls

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._window.clear()

    def _close(self) -> None:
        self._state = "closed"
        self._window.clear()

"""The gateway's rules without I/O: which route a request takes, which upstream instance serves it, how many
retries a service may get, and the token-bucket arithmetic of the rate limits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from microshop_gateway.settings import RouteSpec


class RouteNotFound(Exception):
    """No route may serve this path (unknown API path, internal path, or an unsafe path)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no route for {path!r}")
        self.path = path


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, on a segment boundary (``/api/v1/usersX`` is not)."""
    if prefix == "/":
        return True
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def is_safe_path(path: str) -> bool:
    """Reject dot segments and empty segments: an upstream or an HTTP client normalising
    ``/api/v1/products/../../internal/x`` would otherwise reach a path the table never allowed."""
    if not path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    segments = path.split("/")[1:]
    inner = segments[:-1]  # a trailing slash leaves one empty last segment, which is harmless
    return all(segment not in (".", "..") for segment in segments) and all(inner_s for inner_s in inner)


def _bounds(prefix: str) -> tuple[str, str]:
    """``prefix`` without its trailing slash, and that plus one: a path is under the prefix when it equals the
    first or starts with the second (``"/"`` gives ``("", "/")``, which every path is under)."""
    base = prefix.rstrip("/")
    return base, base + "/"


@dataclass(frozen=True)
class RouteTable:
    """The route table: first matching row wins; blocked and reserved prefixes never reach the catch-all."""

    routes: Sequence[RouteSpec]
    blocked_prefixes: Sequence[str] = ("/internal",)
    reserved_prefixes: Sequence[str] = ("/api", "/internal", "/.well-known")

    def __post_init__(self) -> None:
        # Every row's bounds are worked out once: match() runs on every request.
        rows = tuple(
            (route, *_bounds(route.prefix), any(_under(route.prefix, p) for p in self.reserved_prefixes))
            for route in self.routes
        )
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_blocked", tuple(_bounds(p) for p in self.blocked_prefixes))
        object.__setattr__(self, "_reserved", tuple(_bounds(p) for p in self.reserved_prefixes))

    def match(self, method: str, path: str) -> RouteSpec:
        """The route for this request; raises ``RouteNotFound``."""
        if not is_safe_path(path) or any(path == base or path.startswith(below) for base, below in self._blocked):
            raise RouteNotFound(path)
        reserved = any(path == base or path.startswith(below) for base, below in self._reserved)
        method = method.upper()
        stripped = path.rstrip("/")
        for route, base, below, row_reserved in self._rows:
            if route.exact:
                if stripped != base:
                    continue
            elif path != base and not path.startswith(below):
                continue
            if route.methods is not None and method not in route.methods:
                continue
            if reserved and not row_reserved:
                continue  # a broad row such as "/" must not swallow unknown /api/... paths
            return route
        raise RouteNotFound(path)

    _rows: tuple[tuple[RouteSpec, str, str, bool], ...] = field(init=False, repr=False, compare=False)
    _blocked: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _reserved: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)


class Balancer:
    """Round robin over one service's instances. An instance is skipped while its readiness probe fails
    (``set_ready``) and for ``cooldown`` seconds after a call to it failed. When every instance is skipped it
    still hands one out: better to try than to refuse."""

    def __init__(
        self, urls: Iterable[str], *, cooldown: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.urls = list(urls)
        if not self.urls:
            raise ValueError("a balancer needs at least one instance URL")
        self.cooldown = cooldown
        self._clock = clock
        self._next = 0
        self._failed_until: dict[str, float] = {}
        self._unready: set[str] = set()

    def pick(self) -> str:
        now = self._clock()
        count = len(self.urls)
        for step in range(count):
            url = self.urls[(self._next + step) % count]
            if url not in self._unready and self._failed_until.get(url, 0.0) <= now:
                self._next = (self._next + step + 1) % count
                return url
        url = self.urls[self._next]
        self._next = (self._next + 1) % count
        return url

    def failed(self, url: str) -> None:
        self._failed_until[url] = self._clock() + self.cooldown

    def succeeded(self, url: str) -> None:
        if self._failed_until:
            self._failed_until.pop(url, None)

    def set_ready(self, url: str, ready: bool) -> bool:
        """Take an instance out of the rotation or put it back; True when that changed its state."""
        if url not in self.urls:
            raise ValueError(f"{url!r} is not an instance of this balancer ({self.urls})")
        was_ready = url not in self._unready
        if ready:
            self._unready.discard(url)
        else:
            self._unready.add(url)
        return was_ready != ready

    def is_ready(self, url: str) -> bool:
        return url not in self._unready


class RetryBudget:
    """Lets retries add at most ``ratio`` to a service's requests over the last ``window`` seconds, plus
    ``min_per_second`` retries a second, so a failing or slow service never gets a multiple of its normal
    load from retries (a retry storm). Counts are kept in one-second buckets."""

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: float = 10.0,
        min_per_second: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._clock = clock
        self._size = max(1, round(window))
        self._requests = [0] * self._size
        self._retries = [0] * self._size
        self._second = int(clock())

    def _rotate(self) -> int:
        """The current bucket's index, after emptying the buckets of the seconds that passed."""
        second = int(self._clock())
        if second != self._second:
            for passed in range(min(second - self._second, self._size)):
                index = (self._second + 1 + passed) % self._size
                self._requests[index] = 0
                self._retries[index] = 0
            self._second = second
        return second % self._size

    def request(self) -> None:
        """Count one client request (its first attempt)."""
        self._requests[self._rotate()] += 1

    def try_retry(self) -> bool:
        """May one more retry go out now? A True answer counts it."""
        index = self._rotate()
        allowed = self.ratio * sum(self._requests) + self.min_per_second * self._size
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
        return True


def gcra(tat: float | None, now: float, interval: float, capacity: int) -> tuple[float, float]:
    """One request against a token bucket kept as its theoretical arrival time (GCRA).

    ``tat`` is the stored value (None for a new key), ``interval`` the seconds between requests at the
    sustained rate, ``capacity`` the burst. Returns ``(new_tat, 0.0)`` when the request is allowed (store
    ``new_tat``), or ``(tat, wait)`` when it is refused: ``wait`` seconds until it would be allowed.
    """
    base = now if tat is None or tat < now else tat
    new_tat = base + interval
    wait = new_tat - capacity * interval - now
    if wait > 0:
        return base, wait
    return new_tat, 0.0

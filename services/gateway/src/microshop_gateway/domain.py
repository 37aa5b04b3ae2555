"""The gateway's rules without I/O: which route a request takes, and which upstream instance serves it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RouteTable:
    """The route table: first matching row wins; blocked and reserved prefixes never reach the catch-all."""

    routes: Sequence[RouteSpec]
    blocked_prefixes: Sequence[str] = ("/internal",)
    reserved_prefixes: Sequence[str] = ("/api", "/internal", "/.well-known")

    def match(self, method: str, path: str) -> RouteSpec:
        """The route for this request; raises ``RouteNotFound``."""
        if not is_safe_path(path) or any(_under(path, p) for p in self.blocked_prefixes):
            raise RouteNotFound(path)
        reserved = any(_under(path, p) for p in self.reserved_prefixes)
        for route in self.routes:
            if route.exact and path.rstrip("/") != route.prefix.rstrip("/"):
                continue
            if not _under(path, route.prefix):
                continue
            if route.methods is not None and method.upper() not in route.methods:
                continue
            if reserved and not any(_under(route.prefix, p) for p in self.reserved_prefixes):
                continue  # a broad row such as "/" must not swallow unknown /api/... paths
            return route
        raise RouteNotFound(path)


class Balancer:
    """Round robin over one service's instances, skipping for ``cooldown`` seconds an instance whose last
    call failed. When every instance is cooling down it still hands one out: better to try than to refuse."""

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

    def pick(self) -> str:
        now = self._clock()
        count = len(self.urls)
        for step in range(count):
            url = self.urls[(self._next + step) % count]
            if self._failed_until.get(url, 0.0) <= now:
                self._next = (self._next + step + 1) % count
                return url
        url = self.urls[self._next]
        self._next = (self._next + 1) % count
        return url

    def failed(self, url: str) -> None:
        self._failed_until[url] = self._clock() + self.cooldown

    def succeeded(self, url: str) -> None:
        self._failed_until.pop(url, None)

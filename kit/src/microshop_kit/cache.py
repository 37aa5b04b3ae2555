"""A short-lived shared cache of public GET answers, in front of the router (a "microcache").

Only answers that say they may be shared (``Cache-Control: public``, no ``private``/``no-store``/``no-cache``,
no ``Set-Cookie``, no ``Vary``) to requests without credentials are kept, for at most ``ttl`` seconds and never
longer than their own ``max-age``/``s-maxage``. A hit is answered without reaching the router: the same bytes,
the same ETag, a 304 when the client already has them. The key is the exact path and query bytes, so a hit
only ever repeats an answer the application itself gave to that same request.

Why: catalog pages are read far more often than they change; one second of reuse turns thousands of identical
reads per second into one. Every write request this process serves (POST, PUT, PATCH, DELETE) clears the
cache, and background writers call ``clear()``; other instances see changes after at most ``ttl`` (catalog
answers already allow clients ``max-age`` seconds of staleness).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

#: Request headers that make an answer personal (or conditional on something this cache does not track).
_PRIVATE_REQUEST = frozenset({b"authorization", b"cookie"})
_NOT_SHARED = (b"private", b"no-store", b"no-cache")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    status: int
    headers: Headers
    body: bytes
    etag: bytes | None
    expires: float
    #: The router's route for the request, so metrics and the access log name it on a hit too.
    route: object


def _max_age(cache_control: bytes) -> float | None:
    """Seconds a shared cache may keep the answer, or None when it may not keep it at all."""
    directives = [part.strip().lower() for part in cache_control.split(b",")]
    if b"public" not in directives or any(d.startswith(_NOT_SHARED) for d in directives):
        return None
    ages: dict[bytes, float] = {}
    for directive in directives:
        name, _, value = directive.partition(b"=")
        if name in (b"max-age", b"s-maxage") and value.isdigit():
            ages[name] = float(value)
    age = ages.get(b"s-maxage", ages.get(b"max-age"))
    return age if age else None


def shared_lifetime(headers: Headers) -> float | None:
    """Seconds a shared cache may keep a 200 answer with these (lower-cased) headers, or None: it must say
    ``public`` with a max-age, and carry no ``Set-Cookie`` or ``Vary``."""
    cache_control = next((v for n, v in headers if n == b"cache-control"), None)
    if cache_control is None or any(n in (b"set-cookie", b"vary") for n, _ in headers):
        return None
    return _max_age(cache_control)


def _etag_matches(header: bytes, etag: bytes) -> bool:
    candidates = {value.strip().removeprefix(b"W/") for value in header.split(b",")}
    return b"*" in candidates or etag in candidates


class ResponseCache:
    """The kept answers, least recently stored first out, with hit and miss counters."""

    def __init__(self, ttl: float, max_entries: int = 2048) -> None:
        self.hits = 0
        self.misses = 0
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bytes], CachedAnswer] = OrderedDict()

    def get_fresh(self, key: tuple[str, bytes], now: float) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry

    def put(self, key: tuple[str, bytes], entry: CachedAnswer) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every kept answer (a writer in this process changed what they show)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ResponseCacheMiddleware:
    """Serves repeated public GET/HEAD requests under ``prefixes`` from ``cache``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: ResponseCache,
        prefixes: Iterable[str],
        cleared_by_writes: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.prefixes = tuple(prefixes)
        #: False in front of other services (a gateway): their writes are not this process's to track.
        self.cleared_by_writes = cleared_by_writes
        self.clock = clock or time.monotonic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            if self.cleared_by_writes:
                await self._write(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self.cache.ttl <= 0 or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        if_none_match: bytes | None = None
        for name, value in scope["headers"]:
            if name in _PRIVATE_REQUEST:
                await self.app(scope, receive, send)
                return
            if name == b"if-none-match":
                if_none_match = value
        key = (scope["path"], scope.get("query_string", b""))
        entry = self.cache.get_fresh(key, self.clock())
        if entry is not None:
            self.cache.hits += 1
            scope["route"] = entry.route
            await self._replay(scope, send, entry, if_none_match)
            return
        self.cache.misses += 1
        await self._fill(scope, receive, send, key)

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any write this process serves may change what kept answers show: forget them as the write's answer
        starts (its transaction has committed), so the writer's next read sees its own write."""

        async def clearing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.cache.clear()
            await send(message)

        try:
            await self.app(scope, receive, clearing_send)
        finally:
            self.cache.clear()

    async def _replay(self, scope: Scope, send: Send, entry: CachedAnswer, if_none_match: bytes | None) -> None:
        if if_none_match is not None and entry.etag is not None and _etag_matches(if_none_match, entry.etag):
            kept = [(n, v) for n, v in entry.headers if n not in (b"content-length", b"content-type")]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": entry.status, "headers": entry.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else entry.body})

    async def _fill(self, scope: Scope, receive: Receive, send: Send, key: tuple[str, bytes]) -> None:
        """Pass the request on; keep a 200 answer that may be shared."""
        start: Message | None = None
        chunks: list[bytes] = []
        keep = scope["method"] == "GET"

        async def recording_send(message: Message) -> None:
            nonlocal start, keep
            if message["type"] == "http.response.start":
                start = message
                keep = keep and message["status"] == 200
            elif message["type"] == "http.response.body" and keep:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, recording_send)
        if not keep or start is None:
            return
        headers: Headers = [(bytes(n).lower(), bytes(v)) for n, v in start.get("headers", [])]
        age = shared_lifetime(headers)
        if age is None:
            return
        etag = next((v for n, v in headers if n == b"etag"), None)
        # Per-request headers are the kit's to add again on every answer, not part of the kept one.
        kept = [(n, v) for n, v in headers if n not in (b"x-request-id", b"date")]
        ttl = min(self.cache.ttl, age)
        expires = self.clock() + ttl
        self.cache.put(key, CachedAnswer(200, kept, b"".join(chunks), etag, expires, scope.get("route")))

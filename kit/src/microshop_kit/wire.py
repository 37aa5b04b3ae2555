"""A lean HTTP/1.1 client: pooled keep-alive connections per instance (asyncio protocol + httptools).

Every service-to-service call (``microshop_kit.http.ServiceClient``) and the gateway's hop to its upstreams go
through it. Why not aiohttp's client: it costs ~210 us of CPU per request on this machine against ~60 us for this
client (httptools is the parser uvicorn uses), measured as CPU time per request of a proxy process in front of
the same upstream (docs/architecture.md). Microshop services talk only to each other over it, so it does exactly
what that needs: one request at a time per connection, Content-Length or chunked answers (bodies read whole,
capped), keep-alive reuse, and a clear line between "never reached the instance" (safe to try another) and
"failed after". The caller bounds the time of a request (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


class WireError(Exception):
    """No usable answer from the instance (the subclasses say why)."""


class UpstreamConnectError(WireError):
    """The request never reached the instance: no connection, or a kept-alive connection the instance had
    closed before any answer byte came. Safe to send again (elsewhere) for an idempotent method."""


class UpstreamBroken(WireError):
    """The instance accepted the request but its answer broke off or could not be parsed."""


class UpstreamTooLarge(WireError):
    """The answer is larger than the caller accepts."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    #: Raw header pairs as the instance sent them (names in their original case).
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept-alive connection; at most one request in flight."""

    __slots__ = (
        "chunks",
        "closed",
        "got_bytes",
        "head_only",
        "headers",
        "idle_since",
        "limit",
        "parser",
        "reusable",
        "size",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = 0
        self.got_bytes = False
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.head_only = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if not self.got_bytes:
            waiter.set_exception(UpstreamConnectError(f"connection closed before an answer ({exc!r})"))
        else:
            waiter.set_exception(UpstreamBroken(f"connection closed in the middle of the answer ({exc!r})"))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken("the instance tried to switch protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"unparsable answer: {exc}"))
        except UpstreamTooLarge as exc:
            self._fail(exc)

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            self.headers = []  # an interim answer (1xx): the real one follows
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        if self.head_only:
            # A HEAD answer announces a length but carries no body; the parser would wait for one.
            self.reusable = False
            self._done()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            # Failed here, before raising: httptools wraps a callback's exception in its own parser error,
            # which data_received would otherwise report as a broken answer.
            too_large = UpstreamTooLarge(f"answer exceeds {self.limit} bytes")
            self._fail(too_large)
            raise too_large
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self._done()

    # ------------------------------------------------------------------ requests

    def _done(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            waiter.set_result(Answer(self.parser.get_status_code(), self.headers, body))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, *, head_only: bool, limit: int) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.headers = []
        self.chunks = []
        self.size = 0
        self.limit = limit
        self.got_bytes = False
        self.head_only = head_only
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class InstancePool:
    """Kept-alive connections to one upstream instance (``http://host:port`` or ``https://...``)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_idle: int = 64,
        idle_timeout: float = 15.0,
        connect_timeout: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream URL is http(s)://host[:port], got {base_url!r}")
        self.base_url = base_url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc.encode("ascii")
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.max_idle = max_idle
        #: Kept below the instances' own idle limit, so a reused connection is not one they are closing.
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: deque[_Connection] = deque()

    async def _connection(self) -> tuple[_Connection, bool]:
        """A kept-alive connection (and True) or a new one (and False)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            return conn, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {self.base_url}: {exc!r}") from exc
        return conn, False

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        limit: int,
        resend_on_stale: bool = True,
    ) -> Answer:
        """Send one request and read the whole answer (at most ``limit`` body bytes). The caller bounds the
        time (``asyncio.timeout``); a cancelled request's connection is closed, never reused.

        A kept-alive connection that closes before any answer byte is usually one the instance closed while it
        sat idle; with ``resend_on_stale`` the request is sent once more on a new connection (leave it off for
        a request that must not possibly run twice)."""
        head = [method, b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            head += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        head.append(b"\r\n")
        data = b"".join(head) + body
        while True:
            conn, reused = await self._connection()
            try:
                answer = await conn.send(data, head_only=method == b"HEAD", limit=limit)
            except UpstreamConnectError:
                conn.close()
                if reused and resend_on_stale:
                    continue  # the instance closed that idle connection before reading the request: try a new one
                raise
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return answer

    def _release(self, conn: _Connection) -> None:
        conn.waiter = None
        if conn.closed or not conn.reusable or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

"""Calls to other services: deadlines, safe retries and a circuit breaker, over the kit's pooled HTTP/1.1
client (``microshop_kit.wire``: ~4x less CPU per call than aiohttp's client, see its docstring). The pool also
keeps one aiohttp session for the few calls that are not service-to-service hot paths (JWKS, probes).

Retries are hand-written (a dozen lines) rather than taken from stamina or tenacity: the decision to
retry depends on the HTTP answer (502/503/504) as well as on exceptions, every call has one deadline that
the retries and their back-off must fit inside, and the breaker must see each attempt. Bending a
decorator-based library to all three took more code than it saved, and added a dependency to every service.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from microshop_kit.breaker import CircuitBreaker
from microshop_kit.cache import CachedAnswer, ResponseCache, shared_lifetime
from microshop_kit.context import outgoing_headers
from microshop_kit.errors import CircuitOpen, UpstreamError, UpstreamUnavailable
from microshop_kit.wire import InstancePool, UpstreamConnectError, WireError

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
#: Characters left as they are in a request path (already-escaped %XX sequences included).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=\-._~%?]*")
Params = Mapping[str, str | int | float] | Sequence[tuple[str, str | int | float]]


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of ``ServiceClient.request``, typed for its get/post/... helpers."""

    json: Any
    content: bytes | None
    headers: Mapping[str, str] | None
    params: Params | None
    idempotent: bool | None
    timeout: float | None


class HttpPool:
    """The process's outgoing connections: kept-alive connections per service instance (``instance``) and one
    ``aiohttp.ClientSession`` (``session``), made on first use inside the running event loop."""

    def __init__(
        self, *, limit: int = 256, keepalive_timeout: float = 15.0, max_answer_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self.max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._instances: dict[tuple[str, float], InstancePool] = {}

    def instance(self, base_url: str, *, connect_timeout: float) -> InstancePool:
        """The kept-alive connections to one instance (``http://host:port``)."""
        key = (base_url, connect_timeout)
        pool = self._instances.get(key)
        if pool is None:
            pool = InstancePool(
                base_url,
                max_idle=self.limit,
                idle_timeout=self.keepalive_timeout,
                connect_timeout=connect_timeout,
            )
            self._instances[key] = pool
        return pool

    def session(self) -> aiohttp.ClientSession:
        """The shared session; must be called from inside the event loop that will use it."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=self.keepalive_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # services are stateless to each other
                raise_for_status=False,
                trust_env=False,  # never route service-to-service calls through an HTTP(S)_PROXY
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("HttpPool is bound to another event loop; make one pool per loop")
        return self._session

    async def close(self) -> None:
        for pool in self._instances.values():
            pool.close()
        self._instances.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A whole HTTP answer from another service (any status: the caller decides what a 4xx/5xx means)."""

    status: int
    #: Header pairs as the instance sent them; ``headers`` gives them as a case-insensitive mapping.
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    service: str

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(
            CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers)
        )

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            message = f"answer {self.status} is not JSON"
            raise UpstreamError(self.service, message, status=self.status) from exc


class ServiceClient:
    """Calls one upstream service. ``timeout`` bounds a whole call, retries and back-off included.

    ``base_url`` may list several instances, comma-separated: calls go round-robin, and an instance that
    refuses the connection (the request was never sent, so any method is safe) is skipped for the next one
    within the same attempt. Only when every instance refuses does the attempt fail.

    With a ``cache`` (``microshop_kit.cache.ResponseCache``), a GET without credentials is answered from it
    while an earlier 200 answer to the same target is fresh: one that said ``Cache-Control: public`` with a
    max-age, kept at most that long and never longer than the cache's ttl. Any other method sent through the
    client empties the cache (the caller is changing something such answers may show).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        pool: HttpPool,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        breaker: CircuitBreaker | None = None,
        connect_timeout: float = 1.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        cache: ResponseCache | None = None,
    ) -> None:
        self.base_urls = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self.base_urls or not all(url.startswith(("http://", "https://")) for url in self.base_urls):
            raise ValueError(f"base_url for {name!r} must be http(s) URLs (comma-separated), got {base_url!r}")
        self.name = name
        self._next = 0
        self.pool = pool
        self.timeout = timeout
        self.retries = retries
        self.breaker = breaker
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.cache = cache
        self._fetching: dict[tuple[str, bytes], asyncio.Future[UpstreamResponse]] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Params | None = None,
        idempotent: bool | None = None,
        # A deadline the retry loop shares out between attempts, so asyncio.timeout() cannot replace it.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> UpstreamResponse:
        """Send one request, retrying it only when it is safe to repeat.

        Idempotent calls (GET/HEAD/PUT/DELETE/OPTIONS, a call carrying an ``Idempotency-Key`` header, or
        ``idempotent=True``) are retried on no answer and on 502/503/504, with full-jitter exponential
        back-off, while the deadline allows. Other calls are sent exactly once. Raises ``CircuitOpen``
        without sending when the breaker is open, ``UpstreamUnavailable`` when no answer came; returns
        every HTTP answer.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        method = method.upper()
        extra = CIMultiDict(headers or {})
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or "Idempotency-Key" in extra
        if json is not None:
            content = orjson.dumps(json)
            extra.setdefault("Content-Type", "application/json")
        target = _target(path, params)
        cache_key: tuple[str, bytes] | None = None
        if self.cache is not None:
            if method == "GET" and "authorization" not in extra and "cookie" not in extra:
                cache_key = (self.name, target)
                kept = self.cache.get_fresh(cache_key, time.monotonic())
                if kept is not None:
                    return UpstreamResponse(kept.status, kept.headers, kept.body, self.name)
                pending = self._fetching.get(cache_key)
                if pending is not None:
                    # The same answer is already on its way (a kept one just expired under load): share it.
                    return await asyncio.shield(pending)
            elif method not in ("GET", "HEAD", "OPTIONS"):
                self.cache.clear()
        if cache_key is None:
            return await self._send(method, path, target, content, extra, idempotent, timeout)
        fetch = asyncio.ensure_future(self._send(method, path, target, content, extra, idempotent, timeout))
        self._fetching[cache_key] = fetch
        fetch.add_done_callback(lambda done: self._fetched(cache_key, done))
        # Shielded: this caller being cancelled does not cancel the answer others are waiting for.
        answer = await asyncio.shield(fetch)
        if answer.status == 200:
            self._keep(cache_key, answer)
        return answer

    async def _send(
        self,
        method: str,
        path: str,
        target: bytes,
        content: bytes | None,
        extra: CIMultiDict[str],
        idempotent: bool,
        timeout: float | None,  # noqa: ASYNC109 - a deadline the attempts share out
    ) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        attempts = 1 + (self.retries if idempotent else 0)
        last: UpstreamResponse | None = None
        for attempt in range(attempts):
            try:
                last = await self._attempt(method, path, target, content, extra, deadline, idempotent)
            except CircuitOpen:
                if last is not None:
                    return last  # opened between our attempts: hand back the answer we have
                raise
            except (WireError, TimeoutError) as exc:
                delay = self._backoff(attempt, attempts, deadline)
                if delay is None:
                    if last is not None:
                        return last  # an earlier attempt did get an answer: that is the one to act on
                    reason = "timed out" if isinstance(exc, TimeoutError) else f"no answer ({exc!r})"
                    raise UpstreamUnavailable(self.name, f"{method} {path} {reason}") from exc
            else:
                if last.status not in RETRY_STATUSES:
                    return last
                delay = self._backoff(attempt, attempts, deadline)
                if delay is None:
                    return last
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get(self, path: str, **kwargs: Unpack[RequestOptions]) -> UpstreamResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Unpack[RequestOptions]) -> UpstreamResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Unpack[RequestOptions]) -> UpstreamResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Unpack[RequestOptions]) -> UpstreamResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Unpack[RequestOptions]) -> UpstreamResponse:
        return await self.request("DELETE", path, **kwargs)

    def _fetched(self, key: tuple[str, bytes], fetch: asyncio.Future[UpstreamResponse]) -> None:
        if self._fetching.get(key) is fetch:
            del self._fetching[key]
        if not fetch.cancelled():
            fetch.exception()  # retrieved here, so a failure nobody waited for is not reported as unhandled

    def _keep(self, key: tuple[str, bytes], answer: UpstreamResponse) -> None:
        assert self.cache is not None
        lifetime = shared_lifetime([(name.lower(), value) for name, value in answer.raw_headers])
        if lifetime is not None:
            expires = time.monotonic() + min(self.cache.ttl, lifetime)
            self.cache.put(key, CachedAnswer(200, answer.raw_headers, answer.body, None, expires, None))

    async def _attempt(
        self,
        method: str,
        path: str,
        target: bytes,
        content: bytes | None,
        extra: CIMultiDict[str],
        deadline: float,
        idempotent: bool,
    ) -> UpstreamResponse:
        if self.breaker is not None and not self.breaker.allow():
            raise CircuitOpen(self.name, f"circuit open; {method} {path} not sent")
        if deadline - asyncio.get_running_loop().time() <= 0:
            raise TimeoutError
        # Each attempt gets a fresh span id (a retry is a new client span); the caller's headers win.
        headers = CIMultiDict(outgoing_headers())
        headers.update(extra)
        count = len(self.base_urls)
        start, self._next = self._next, (self._next + 1) % count
        request = (method.encode("ascii"), target, _header_lines(headers), content or b"")
        for step in range(count):
            base = self.base_urls[(start + step) % count]
            instance = self.pool.instance(base, connect_timeout=self.connect_timeout)
            try:
                async with asyncio.timeout_at(deadline):
                    answer = await instance.request(
                        *request, limit=self.pool.max_answer_bytes, resend_on_stale=idempotent
                    )
            except UpstreamConnectError:
                if step + 1 < count:
                    continue  # refused: nothing was sent, so the next instance may have it
                self._record(failed=True)
                raise
            except (WireError, TimeoutError):
                self._record(failed=True)
                raise
            self._record(failed=answer.status >= 500)
            return UpstreamResponse(answer.status, answer.headers, answer.body, self.name)
        raise AssertionError("unreachable: the last instance returns or raises")

    def _record(self, *, failed: bool) -> None:
        if self.breaker is None:
            return
        if failed:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()

    def _backoff(self, attempt: int, attempts: int, deadline: float) -> float | None:
        """Full-jitter back-off before the next attempt, or None when no attempt is left or it cannot fit."""
        if attempt + 1 >= attempts:
            return None
        delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
        if asyncio.get_running_loop().time() + delay >= deadline:
            return None
        return delay


def _target(path: str, params: Params | None) -> bytes:
    """The request target: the path (unsafe characters escaped) and the query string."""
    if not _PLAIN_PATH.fullmatch(path):
        path = quote(path, safe=_PATH_SAFE + "?=&")
    if params:
        path += ("&" if "?" in path else "?") + urlencode(
            list(params.items()) if isinstance(params, Mapping) else params
        )
    return path.encode("ascii")


def _header_lines(headers: CIMultiDict[str]) -> list[tuple[bytes, bytes]]:
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        if name.lower() in ("host", "content-length"):
            continue  # the client writes these
        lines.append((name.encode("latin-1"), value.encode("latin-1")))
    return lines

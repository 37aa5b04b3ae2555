"""ServiceClient against a real aiohttp server on 127.0.0.1: retries, deadlines, breaker, tracing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from microshop_kit.breaker import CircuitBreaker
from microshop_kit.cache import ResponseCache
from microshop_kit.context import TraceContext, request_id_var, trace_var
from microshop_kit.errors import CircuitOpen, UpstreamError, UpstreamUnavailable
from microshop_kit.http import HttpPool, ServiceClient
from microshop_kit.testing import serve_aiohttp


class Upstream:
    """A scriptable upstream: ``replies[path]`` lists the statuses to answer in turn (then 200)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.replies: dict[str, list[int]] = {}
        self.seen: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        self.seen.append(dict(request.headers))
        if path == "/slow":
            await asyncio.sleep(5)
        if path == "/cookie":
            response = web.json_response({"cookie": request.headers.get("Cookie")})
            response.set_cookie("session", "abc")
            return response
        if path == "/503-then-drop" and self.hits[path] > 1:
            assert request.transport is not None
            request.transport.close()  # no answer at all
        if path == "/text":
            return web.Response(text="not json")
        if path in ("/public", "/private"):
            kind = "public, max-age=60" if path == "/public" else "private, max-age=60"
            return web.json_response({"hit": self.hits[path]}, headers={"Cache-Control": kind})
        script = self.replies.get(path, [])
        status = script.pop(0) if script else 200
        body = await request.read()
        return web.json_response(
            {
                "path": path,
                "body": body.decode(),
                "query": {k: request.query.getall(k) for k in request.query},
            },
            status=status,
        )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    async with serve_aiohttp(app, shutdown_timeout=0.1, handler_cancellation=True) as url:
        server.url = url
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An address where nothing listens (bound then closed, so the port is free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def client(url: str, pool: HttpPool, **kwargs: object) -> ServiceClient:
    kwargs.setdefault("backoff_base", 0.01)
    return ServiceClient("products", url, pool, **kwargs)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- retries ------------------------------------------------------------------------------------------------


async def test_get_is_retried_on_503_until_it_succeeds(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/items"] = [503, 503]
    response = await client(upstream.url, pool).get("/items")
    assert response.status == 200
    assert upstream.hits["/items"] == 3


async def test_post_is_sent_once_even_on_503(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/orders"] = [503, 503]
    response = await client(upstream.url, pool).post("/orders", json={"sku": "A"})
    assert response.status == 503
    assert upstream.hits["/orders"] == 1


async def test_post_marked_idempotent_is_retried(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/charges"] = [502, 504]
    response = await client(upstream.url, pool).post("/charges", json={"amount": 5}, idempotent=True)
    assert response.status == 200
    assert response.json()["body"] == '{"amount":5}'
    assert upstream.hits["/charges"] == 3


async def test_post_with_idempotency_key_is_retried(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/charges"] = [503]
    response = await client(upstream.url, pool).post("/charges", json={}, headers={"Idempotency-Key": "k1"})
    assert response.status == 200
    assert upstream.hits["/charges"] == 2


async def test_answer_still_5xx_after_retries_is_returned(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/items"] = [503, 503, 503, 503]
    response = await client(upstream.url, pool, retries=2).get("/items")
    assert response.status == 503
    assert upstream.hits["/items"] == 3


async def test_earlier_answer_is_returned_when_the_last_attempt_gets_none(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/503-then-drop"] = [503]
    response = await client(upstream.url, pool, retries=1).get("/503-then-drop")
    assert response.status == 503
    assert upstream.hits["/503-then-drop"] >= 2


async def test_500_and_4xx_are_not_retried(upstream: Upstream, pool: HttpPool) -> None:
    upstream.replies["/a"] = [500]
    upstream.replies["/b"] = [404]
    assert (await client(upstream.url, pool).get("/a")).status == 500
    assert (await client(upstream.url, pool).get("/b")).status == 404
    assert upstream.hits == Counter({"/a": 1, "/b": 1})


async def test_connection_dropped_without_answer_retries_get_but_not_post(pool: HttpPool) -> None:
    connections = 0

    async def drop(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(UpstreamUnavailable):
            await client(url, pool).post("/orders", json={})
        assert connections == 1
        with pytest.raises(UpstreamUnavailable):
            await client(url, pool).get("/orders")
        # Our three attempts; aiohttp itself also resends an idempotent request once on a dropped
        # connection (RFC 9112 section 9.3.1), so at most twice that, and still bounded.
        assert 3 <= connections - 1 <= 6
    finally:
        server.close()
        await server.wait_closed()


# -- no answer ----------------------------------------------------------------------------------------------


async def test_slow_upstream_raises_unavailable_within_the_deadline(upstream: Upstream, pool: HttpPool) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="timed out") as caught:
        await client(upstream.url, pool, timeout=5.0).get("/slow", timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert caught.value.service == "products"
    assert upstream.hits["/slow"] == 1  # the timeout spent the whole budget: no retry storm on a slow upstream


async def test_refused_port_raises_unavailable(refused_url: str, pool: HttpPool) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="products"):
        await client(refused_url, pool).get("/items")
    assert time.monotonic() - started < 1.0


# -- circuit breaker ----------------------------------------------------------------------------------------


async def test_breaker_opens_on_5xx_and_stops_calls_then_a_probe_closes_it(upstream: Upstream, pool: HttpPool) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(min_calls=3, open_seconds=5.0, clock=clock)
    products = client(upstream.url, pool, retries=0, breaker=breaker)
    upstream.replies["/items"] = [500, 500, 500]
    for _ in range(3):
        assert (await products.get("/items")).status == 500
    assert breaker.state == "open"

    with pytest.raises(CircuitOpen):
        await products.get("/items")
    assert upstream.hits["/items"] == 3  # the rejected call never reached the server

    clock.now += 5.0
    assert breaker.state == "half_open"
    assert (await products.get("/items")).status == 200
    assert breaker.state == "closed"
    assert upstream.hits["/items"] == 4


async def test_breaker_counts_connection_failures(refused_url: str, pool: HttpPool) -> None:
    breaker = CircuitBreaker(min_calls=3, clock=FakeClock())
    products = client(refused_url, pool, retries=0, breaker=breaker)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable) as caught:
            await products.get("/items")
        assert not isinstance(caught.value, CircuitOpen)
    with pytest.raises(CircuitOpen):
        await products.get("/items")


async def test_breaker_opening_between_retries_returns_the_answer_in_hand(upstream: Upstream, pool: HttpPool) -> None:
    breaker = CircuitBreaker(min_calls=2, clock=FakeClock())
    upstream.replies["/items"] = [503, 503, 503]
    response = await client(upstream.url, pool, retries=2, breaker=breaker).get("/items")
    assert response.status == 503
    assert upstream.hits["/items"] == 2


# -- headers and bodies -------------------------------------------------------------------------------------


async def test_request_id_and_trace_are_propagated_with_a_new_span_per_attempt(
    upstream: Upstream, pool: HttpPool
) -> None:
    parent = TraceContext.new()
    request_id_var.set("req-123")
    trace_var.set(parent)
    upstream.replies["/items"] = [503]
    await client(upstream.url, pool).get("/items")

    spans = set()
    for headers in upstream.seen:
        assert headers["X-Request-ID"] == "req-123"
        child = TraceContext.parse(headers["traceparent"])
        assert child is not None
        assert child.trace_id == parent.trace_id
        assert child.span_id != parent.span_id
        spans.add(child.span_id)
    assert len(spans) == 2


async def test_caller_headers_params_and_json_are_sent(upstream: Upstream, pool: HttpPool) -> None:
    response = await client(upstream.url, pool).put(
        "/items/1", json={"name": "x"}, params={"limit": 5}, headers={"x-request-id": "mine"}
    )
    assert response.ok
    assert response.json() == {"path": "/items/1", "body": '{"name":"x"}', "query": {"limit": ["5"]}}
    assert upstream.seen[0]["X-Request-ID"] == "mine"
    assert upstream.seen[0]["Content-Type"] == "application/json"


async def test_unsafe_path_characters_are_escaped_and_answer_headers_read(upstream: Upstream, pool: HttpPool) -> None:
    response = await client(upstream.url, pool).get("/items/a b/caf\u00e9%2F1", params={"q": "tea & pot"})
    assert response.json()["path"] == "/items/a b/caf\u00e9/1"  # the server decodes what was escaped
    assert response.json()["query"] == {"q": ["tea & pot"]}
    assert response.headers["content-type"].startswith("application/json")


async def test_a_header_value_with_a_line_break_is_refused_before_sending(upstream: Upstream, pool: HttpPool) -> None:
    with pytest.raises(ValueError, match="line break"):
        await client(upstream.url, pool).get("/items", headers={"X-Request-ID": "a\r\nX-Admin: yes"})
    assert upstream.hits["/items"] == 0


async def test_non_json_answer_raises_upstream_error_naming_the_service(upstream: Upstream, pool: HttpPool) -> None:
    response = await client(upstream.url, pool).get("/text")
    assert response.body == b"not json"
    with pytest.raises(UpstreamError, match="products"):
        response.json()


async def test_pool_shares_one_session_and_keeps_no_cookies(upstream: Upstream, pool: HttpPool) -> None:
    assert pool.session() is pool.session()
    # By host name: aiohttp's default jar ignores cookies from bare IP addresses anyway.
    products = client(upstream.url.replace("127.0.0.1", "localhost"), pool)
    await products.get("/cookie")
    second = await products.get("/cookie")
    assert second.json() == {"cookie": None}


async def test_repeated_query_parameters_are_sent(upstream: Upstream, pool: HttpPool) -> None:
    response = await client(upstream.url, pool).get("/items", params=[("sku", "A"), ("sku", "B")])
    assert response.json()["query"] == {"sku": ["A", "B"]}


def test_rejects_a_base_url_without_http_scheme(pool: HttpPool) -> None:
    with pytest.raises(ValueError, match="products"):
        ServiceClient("products", "products:8102", pool)


# -- several instances --------------------------------------------------------------------------------------


@pytest.fixture
async def second_upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    async with serve_aiohttp(app, shutdown_timeout=0.1) as url:
        server.url = url
        yield server


async def test_calls_go_round_robin_over_the_instances(
    upstream: Upstream, second_upstream: Upstream, pool: HttpPool
) -> None:
    service = client(f"{upstream.url}, {second_upstream.url}", pool)
    for _ in range(6):
        assert (await service.get("/items")).status == 200

    assert (upstream.hits["/items"], second_upstream.hits["/items"]) == (3, 3)


async def test_a_refusing_instance_is_skipped_even_for_a_post(
    refused_url: str, upstream: Upstream, pool: HttpPool
) -> None:
    breaker = CircuitBreaker(failure_ratio=0.5, min_calls=1)
    service = client(f"{refused_url},{upstream.url}", pool, breaker=breaker)
    answers = [await service.post("/orders", json={"n": n}) for n in range(4)]

    assert [answer.status for answer in answers] == [200] * 4
    assert upstream.hits["/orders"] == 4  # each POST sent once, to the instance that listens
    assert breaker.allow(), "a refusal that another instance made up for is no failure"


# -- client cache -------------------------------------------------------------------------------------------


async def test_a_public_answer_is_reused_within_the_ttl_and_never_for_credentials(
    upstream: Upstream, pool: HttpPool
) -> None:
    service = client(upstream.url, pool, cache=ResponseCache(ttl=0.3))
    assert [(await service.get("/public")).json()["hit"] for _ in range(3)] == [1, 1, 1]
    assert (await service.get("/public", params={"page": 2})).json()["hit"] == 2  # another target
    signed = await service.get("/public", headers={"Authorization": "Bearer abc"})
    assert signed.json()["hit"] == 3
    assert [(await service.get("/private")).json()["hit"] for _ in range(2)] == [1, 2]
    await asyncio.sleep(0.35)
    assert (await service.get("/public")).json()["hit"] == 4  # the ttl caps the answer's own max-age


async def test_a_write_through_the_client_empties_its_cache(upstream: Upstream, pool: HttpPool) -> None:
    service = client(upstream.url, pool, cache=ResponseCache(ttl=30))
    assert (await service.get("/public")).json()["hit"] == 1
    await service.post("/items", json={})
    assert (await service.get("/public")).json()["hit"] == 2


async def test_concurrent_misses_share_one_request(upstream: Upstream, pool: HttpPool) -> None:
    service = client(upstream.url, pool, cache=ResponseCache(ttl=30))
    answers = await asyncio.gather(*(service.get("/public") for _ in range(10)))
    assert [answer.json()["hit"] for answer in answers] == [1] * 10
    assert upstream.hits["/public"] == 1

"""The response cache keeps only what may be shared, for no longer than it may, and forgets on writes."""

from __future__ import annotations

import itertools

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from microshop_kit.cache import ResponseCache, ResponseCacheMiddleware


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_client(cache: ResponseCache, clock: Clock) -> httpx.AsyncClient:
    counter = itertools.count(1)

    async def answer(request: Request) -> Response:
        headers = {"Cache-Control": request.query_params.get("cc", "public, max-age=30"), "ETag": '"v1"'}
        for extra in ("vary", "set-cookie"):
            if extra in request.query_params:
                headers[extra] = request.query_params[extra]
        status = int(request.query_params.get("status", "200"))
        return PlainTextResponse(f"answer {next(counter)}", status_code=status, headers=headers)

    async def write(request: Request) -> Response:
        return PlainTextResponse("written", status_code=201)

    app = Starlette(
        routes=[Route("/api/things", answer, methods=["GET", "HEAD"]), Route("/api/things", write, methods=["POST"])]
    )
    wrapped = ResponseCacheMiddleware(app, cache=cache, prefixes=("/api/things",), clock=clock)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://test")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache() -> ResponseCache:
    return ResponseCache(ttl=1.0)


async def test_a_public_answer_is_reused_until_the_ttl_passes(cache: ResponseCache, clock: Clock) -> None:
    async with make_client(cache, clock) as client:
        first = (await client.get("/api/things")).text
        clock.now += 0.9
        second = (await client.get("/api/things")).text
        clock.now += 0.2
        third = (await client.get("/api/things")).text

    assert (first, second, third) == ("answer 1", "answer 1", "answer 2")


async def test_never_longer_than_the_answer_allows(cache: ResponseCache, clock: Clock) -> None:
    cache.ttl = 60
    async with make_client(cache, clock) as client:
        await client.get("/api/things", params={"cc": "public, max-age=2"})
        clock.now += 2.5
        again = await client.get("/api/things", params={"cc": "public, max-age=2"})

    assert again.text == "answer 2"


@pytest.mark.parametrize(
    "params",
    [
        {"cc": "private, max-age=30"},
        {"cc": "public, no-store"},
        {"cc": "public, max-age=0"},
        {"cc": "max-age=30"},
        {"vary": "Accept-Language"},
        {"set-cookie": "session=1"},
        {"status": "404"},
    ],
)
async def test_what_may_not_be_shared_is_not_kept(cache: ResponseCache, clock: Clock, params: dict[str, str]) -> None:
    async with make_client(cache, clock) as client:
        first = await client.get("/api/things", params=params)
        second = await client.get("/api/things", params=params)

    assert first.text != second.text
    assert len(cache) == 0


async def test_a_write_forgets_every_kept_answer(cache: ResponseCache, clock: Clock) -> None:
    async with make_client(cache, clock) as client:
        await client.get("/api/things")
        await client.post("/api/things")
        after = await client.get("/api/things")

    assert after.text == "answer 2"


async def test_conditional_and_head_requests_are_answered_from_the_kept_answer(
    cache: ResponseCache, clock: Clock
) -> None:
    async with make_client(cache, clock) as client:
        first = await client.get("/api/things")
        not_modified = await client.get("/api/things", headers={"If-None-Match": '"v1"'})
        head = await client.head("/api/things")

    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == first.headers["content-length"]
    assert cache.hits == 2

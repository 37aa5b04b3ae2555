"""What the gateway asks of a client: CORS from listed origins only, header limits, a body sent in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from microshop_gateway import GatewaySettings

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any

SHOP = "https://shop.example"
PREFLIGHT = {"Origin": SHOP, "Access-Control-Request-Method": "POST"}


async def test_without_listed_origins_there_are_no_cors_headers(
    gateway: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    answer = await gateway.get("/api/v1/products", headers={"Origin": SHOP})
    preflight = await gateway.options("/api/v1/orders", headers=PREFLIGHT)

    assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert not [name for name in preflight.headers if name.startswith("access-control-")]


async def test_a_preflight_from_a_listed_origin_is_answered_by_the_gateway(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async with make_gateway(cors_origins=f"{SHOP}, http://localhost:3000") as gateway:
        answer = await gateway.options(
            "/api/v1/orders", headers={**PREFLIGHT, "Access-Control-Request-Headers": "Authorization, Content-Type"}
        )

    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"]
    assert answer.headers["access-control-max-age"] == "600"
    assert "Origin" in answer.headers["vary"]
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers.get_list("access-control-allow-origin") == [SHOP]  # marked once, by the preflight
    assert answer.headers["x-request-id"]  # passed through the kit's middleware: logged and counted
    assert upstreams["orders"].calls == []


async def test_the_answers_the_gateway_gives_itself_are_marked_for_a_listed_origin_too(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async with make_gateway(cors_origins=SHOP, max_body_bytes=1024) as gateway:
        too_large = await gateway.post(
            "/api/v1/orders", content=b"x" * 2048, headers={"Origin": SHOP, "Content-Type": "application/json"}
        )

    assert too_large.status_code == 413
    assert too_large.json()["type"] == "/problems/body-too-large"
    assert too_large.headers["access-control-allow-origin"] == SHOP  # so the browser lets the page read it
    assert "Origin" in too_large.headers.get_list("vary")
    assert upstreams["orders"].calls == []


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, "https://evil.example"),
        ({"Origin": SHOP, "Access-Control-Request-Method": "TRACE"}, "TRACE"),
        ({**PREFLIGHT, "Access-Control-Request-Headers": "x-user-id"}, "x-user-id"),
    ],
)
async def test_a_preflight_outside_the_allow_list_is_refused_naming_why(
    make_gateway: GatewayFactory, headers: dict[str, str], named: str
) -> None:
    async with make_gateway(cors_origins=SHOP) as gateway:
        answer = await gateway.options("/api/v1/orders", headers=headers)

    assert answer.status_code == 403
    assert answer.json()["type"] == "/problems/cors-not-allowed"
    assert named in answer.json()["detail"]
    assert "access-control-allow-origin" not in answer.headers


async def test_only_listed_origins_are_echoed_and_every_answer_varies_by_origin(
    make_gateway: GatewayFactory,
) -> None:
    async with make_gateway(cors_origins=SHOP, cors_allow_credentials=True) as gateway:
        listed = await gateway.get("/api/v1/products/cacheable", headers={"Origin": SHOP})
        cached_other = await gateway.get("/api/v1/products/cacheable", headers={"Origin": "https://evil.example"})
        no_origin = await gateway.get("/api/v1/products")
        problem = await gateway.get("/api/v1/nothing", headers={"Origin": SHOP})

    assert listed.headers["access-control-allow-origin"] == SHOP
    assert listed.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in listed.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in cached_other.headers  # a cached answer is marked per request
    for answer in (listed, cached_other, no_origin, problem):
        assert "Origin" in answer.headers.get_list("vary"), answer.url
        assert answer.headers.get("access-control-allow-origin") != "*"
    assert problem.headers["access-control-allow-origin"] == SHOP  # a browser can read the problem too


@pytest.mark.parametrize("origin", ["*", "https://*.example", "shop.example", "https://shop.example/"])
def test_settings_refuse_a_wildcard_or_malformed_origin(origin: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        GatewaySettings(cors_origins=(origin,))


async def test_too_many_or_too_large_headers_are_431(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    async with make_gateway(max_header_count=20, max_header_bytes=2048) as gateway:
        many = await gateway.get("/api/v1/products", headers={f"x-h{i}": "1" for i in range(25)})
        large = await gateway.get("/api/v1/products", headers={"x-big": "a" * 3000})
        fine = await gateway.get("/api/v1/products", headers={"x-small": "a" * 500})

    for answer in (many, large):
        assert answer.status_code == 431
        assert answer.json()["type"] == "/problems/headers-too-large"
    assert fine.status_code == 200
    assert len(upstreams["products"].calls) == 1


async def test_a_body_sent_too_slowly_is_408_and_not_proxied(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"a":'
        await asyncio.sleep(1)
        yield b"1}"

    async with make_gateway(client_body_timeout=0.2) as gateway:
        answer = await gateway.post("/api/v1/users", content=trickle())

    assert answer.status_code == 408
    assert answer.json()["type"] == "/problems/request-timeout"
    assert upstreams["users"].calls == []

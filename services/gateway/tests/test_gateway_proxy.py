"""What the gateway forwards and answers: body, query, headers, context, failures of upstreams."""

from __future__ import annotations

import time
from typing import Any

import httpx

from microshop_gateway.settings import DEFAULT_ROUTES, RouteSpec
from microshop_kit.testing import JwtIssuer

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "content-security-policy": "frame-ancestors 'none'",
    "x-frame-options": "DENY",
}


def routes_with_timeout(service: str, timeout: float) -> list[RouteSpec]:
    return [r.model_copy(update={"timeout": timeout}) if r.service == service else r for r in DEFAULT_ROUTES]


async def test_method_query_and_body_are_forwarded(gateway: httpx.AsyncClient, issuer: JwtIssuer) -> None:
    body = b'{"lines": [{"sku": "MUG-1", "quantity": 2}]}'
    response = await gateway.put(
        "/api/v1/cart",
        params={"a": "1", "b": "x y", "c": "é"},
        content=body,
        headers={**issuer.headers("u-1"), "Content-Type": "application/json"},
    )

    echoed = response.json()
    assert echoed["method"] == "PUT"
    assert echoed["query"] == "a=1&b=x+y&c=%C3%A9"
    assert echoed["body"] == body.decode()
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["headers"]["content-length"] == str(len(body))


async def test_a_body_is_forwarded_whatever_the_method_and_framing(gateway: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        yield b'{"q": '
        yield b'"chunked"}'

    with_body = await gateway.request("GET", "/api/v1/products", content=b"odd but allowed")
    without = await gateway.get("/api/v1/products")
    chunked = await gateway.post("/api/v1/users", content=chunks())

    assert with_body.json()["body"] == "odd but allowed"
    assert (without.json()["body"], without.json()["headers"].get("content-length", "0")) == ("", "0")
    assert chunked.json()["body"] == '{"q": "chunked"}'


async def test_encoded_path_is_forwarded_unchanged(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/v1/products/a%20b%2Fc")

    assert response.json()["path"] == "/api/v1/products/a%20b%2Fc"


async def test_hop_by_hop_and_forged_identity_headers_are_stripped(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(
        "/api/v1/products",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Upgrade": "websocket",
            "Proxy-Authorization": "Basic abc",
            "X-User-Id": "admin",
            "X-User-Roles": "admin",
            "X-Forwarded-User": "admin",
            "X-Forwarded-For": "6.6.6.6",
            "X-Kept": "yes",
        },
    )

    sent = response.json()["headers"]
    for name in (
        "x-drop-me",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-user-id",
        "x-user-roles",
        "x-forwarded-user",
    ):
        assert name not in sent, name
    assert sent["x-kept"] == "yes"
    assert sent["host"].startswith("127.0.0.1:")  # the upstream's own host, not the client's
    assert sent["x-forwarded-for"] == "127.0.0.1"  # a client's X-Forwarded-For is not trusted by default
    assert sent["x-forwarded-proto"] == "http"


async def test_upstream_hop_by_hop_headers_do_not_reach_the_client(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/v1/products")

    assert "x-secret-hop" not in response.headers and "keep-alive" not in response.headers
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers.get_list("x-request-id") != ["upstream-own-id"]
    assert len(response.headers.get_list("x-request-id")) == 1


async def test_request_id_and_trace_are_propagated(gateway: httpx.AsyncClient) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await gateway.get(
        "/api/v1/products",
        headers={"X-Request-ID": "req-123", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )

    sent = response.json()["headers"]
    assert sent["x-request-id"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"
    version, trace, span, flags = sent["traceparent"].split("-")
    assert (version, trace, flags) == ("00", trace_id, "01")
    assert span != "00f067aa0ba902b7"  # a child span of the gateway's hop


async def test_a_request_id_is_made_when_the_client_sends_none(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/v1/products")

    assert response.json()["headers"]["x-request-id"] == response.headers["x-request-id"]
    assert len(response.json()["headers"]["traceparent"].split("-")) == 4


async def test_security_headers_on_proxied_and_own_answers(gateway: httpx.AsyncClient) -> None:
    answers = [
        await gateway.get("/"),
        await gateway.get("/api/v1/nothing"),
        await gateway.get("/api/v1/cart"),
        await gateway.get("/livez"),
    ]

    assert [a.status_code for a in answers] == [200, 404, 401, 200]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name)


async def test_upstream_down_is_a_fast_503_naming_the_service(
    make_gateway: GatewayFactory, issuer: JwtIssuer, dead_url: str
) -> None:
    async with make_gateway(orders_url=dead_url) as gateway:
        started = time.perf_counter()
        get = await gateway.get("/api/v1/orders", headers=issuer.headers("u-1"))
        post = await gateway.post("/api/v1/orders", json={}, headers=issuer.headers("u-1"))
        elapsed = time.perf_counter() - started

    for response in (get, post):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["service"] == "orders"
        assert response.json()["type"] == "/problems/upstream-unavailable"
    assert elapsed < 1


async def test_slow_upstream_is_a_504_naming_the_service(
    make_gateway: GatewayFactory, upstreams: Upstreams, issuer: JwtIssuer
) -> None:
    async with make_gateway(routes=routes_with_timeout("orders", 0.3)) as gateway:
        for method in ("GET", "POST"):
            started = time.perf_counter()
            response = await gateway.request(method, "/api/v1/orders/slow", headers=issuer.headers("u-1"))
            elapsed = time.perf_counter() - started

            assert response.status_code == 504, method
            assert response.json()["service"] == "orders"
            assert response.json()["type"] == "/problems/upstream-timeout"
            assert 0.3 <= elapsed < 1.5

    assert len(upstreams["orders"].calls) == 2  # a timeout is not retried


async def test_get_is_retried_once_on_another_instance_but_post_is_not(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    upstreams["products"].drop = True  # first in the rotation; it passes its readiness probe
    both = f"{upstreams['products'].url},{upstreams['products-2'].url}"
    async with make_gateway(products_url=both) as gateway:
        get = await gateway.get("/api/v1/products")
    async with make_gateway(products_url=both) as gateway:
        post = await gateway.post("/api/v1/products", json={})

    assert get.status_code == 200 and get.headers["x-upstream"] == "products-2"
    assert post.status_code == 503
    assert [call["method"] for call in upstreams["products-2"].calls] == ["GET"]


async def test_head_keeps_the_upstream_length(gateway: httpx.AsyncClient) -> None:
    response = await gateway.head("/api/v1/products")

    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


async def test_too_large_request_body_is_413_and_not_proxied(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    async with make_gateway(max_body_bytes=2048) as gateway:
        response = await gateway.post("/api/v1/users", content=b"x" * 4096)

    assert response.status_code == 413
    assert upstreams["users"].calls == []


async def test_too_large_upstream_answer_is_502(make_gateway: GatewayFactory) -> None:
    async with make_gateway(max_response_bytes=1024) as gateway:
        response = await gateway.post("/api/v1/users", content=b"x" * 2000)

    assert response.status_code == 502
    assert response.json()["service"] == "users"
    assert response.json()["type"] == "/problems/upstream-too-large"


async def test_public_answers_are_shared_for_a_moment_but_never_personal_ones(
    gateway: httpx.AsyncClient, upstreams: Upstreams, issuer: JwtIssuer
) -> None:
    first = await gateway.get("/api/v1/products/cacheable?page=2")
    second = await gateway.get("/api/v1/products/cacheable?page=2")
    other_query = await gateway.get("/api/v1/products/cacheable?page=3")
    with_token = await gateway.get("/api/v1/products/cacheable?page=2", headers=issuer.headers("u-1"))
    not_shareable = [await gateway.get("/api/v1/products/plain") for _ in range(2)]

    assert second.json() == first.json()
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    calls = [(call["path"], call["query"]) for call in upstreams["products"].calls]
    assert calls.count(("/api/v1/products/cacheable", "page=2")) == 2  # the first, and the one with a token
    assert ("/api/v1/products/cacheable", "page=3") in calls
    assert calls.count(("/api/v1/products/plain", "")) == 2
    assert all(answer.status_code == 200 for answer in (other_query, with_token, *not_shareable))


async def test_the_shared_cache_can_be_turned_off(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    async with make_gateway(response_cache_seconds=0) as gateway:
        for _ in range(2):
            await gateway.get("/api/v1/products/cacheable")

    assert len(upstreams["products"].calls) == 2

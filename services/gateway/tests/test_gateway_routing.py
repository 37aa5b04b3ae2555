"""Routing through the gateway: prefixes to services, what is never proxied, round robin over instances."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from microshop_kit.testing import JwtIssuer

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any

PUBLIC_ROUTES = [
    ("POST", "/api/v1/users", "users"),
    ("POST", "/api/v1/auth/token", "users"),
    ("GET", "/.well-known/jwks.json", "users"),
    ("GET", "/api/v1/products", "products"),
    ("GET", "/api/v1/products/p-1/image.svg", "products"),
    ("GET", "/api/v1/categories", "products"),
    ("GET", "/api/v1/availability", "products"),
    ("GET", "/", "storefront"),
    ("GET", "/products/p-1", "storefront"),
    ("GET", "/static/shop.css", "storefront"),
]
TOKEN_ROUTES = [
    ("GET", "/api/v1/users/me", "users"),
    ("GET", "/api/v1/cart", "orders"),
    ("PUT", "/api/v1/cart", "orders"),
    ("POST", "/api/v1/orders", "orders"),
    ("GET", "/api/v1/orders/o-1", "orders"),
    ("POST", "/api/v1/payment-methods", "payments"),
    ("GET", "/api/v1/notifications", "notifications"),
]


@pytest.mark.parametrize(("method", "path", "service"), PUBLIC_ROUTES)
async def test_public_routes_reach_their_service_without_a_token(
    gateway: httpx.AsyncClient, method: str, path: str, service: str
) -> None:
    response = await gateway.request(method, path)

    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"].startswith(service)
    assert response.json()["path"] == path


@pytest.mark.parametrize(("method", "path", "service"), TOKEN_ROUTES)
async def test_token_routes_reach_their_service_with_a_token(
    gateway: httpx.AsyncClient, issuer: JwtIssuer, method: str, path: str, service: str
) -> None:
    response = await gateway.request(method, path, headers=issuer.headers("user-1"))

    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"] == service
    assert response.json()["path"] == path


@pytest.mark.parametrize(
    "path",
    [
        "/internal/v1/users/u-1",
        "/internal",
        "/api/v1/unknown",
        "/api/v2/products",
        "/api/v1/productsX",
        "/api",
        "/.well-known/openid-configuration",
        "/api/v1/products/%2e%2e/%2e%2e/internal/v1/users/u-1",  # decoded dot segments (literal ones: unit test)
        "/api/v1/products//x",
    ],
)
async def test_internal_unknown_and_unsafe_paths_are_404_and_never_proxied(
    gateway: httpx.AsyncClient, upstreams: Upstreams, issuer: JwtIssuer, path: str
) -> None:
    response = await gateway.get(path, headers=issuer.headers("user-1"))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-found"
    assert all(not server.calls for server in upstreams.values())


async def test_post_to_a_user_below_the_sign_up_path_needs_a_token(gateway: httpx.AsyncClient) -> None:
    # Only POST /api/v1/users itself (sign up) is public.
    assert (await gateway.post("/api/v1/users/u-1")).status_code == 401
    assert (await gateway.get("/api/v1/users")).status_code == 401


async def test_round_robin_over_two_instances(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    both = f"{upstreams['products'].url}, {upstreams['products-2'].url}"
    async with make_gateway(products_url=both) as gateway:
        served = [(await gateway.get("/api/v1/products")).headers["x-upstream"] for _ in range(6)]

    assert served == ["products", "products-2"] * 3


async def test_an_instance_that_failed_is_skipped_for_a_while(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    upstreams["users"].drop = True  # first in the rotation; it passes its readiness probe
    both = f"{upstreams['users'].url},{upstreams['products-2'].url}"
    async with make_gateway(users_url=both) as gateway:
        # POST is never retried, so only the skipping keeps later calls off the dead instance.
        statuses = [(await gateway.post("/api/v1/users", json={})).status_code for _ in range(4)]

    assert statuses == [503, 200, 200, 200]
    assert len(upstreams["users"].calls) == 1
    assert len(upstreams["products-2"].calls) == 3

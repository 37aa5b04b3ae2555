"""The route table and the balancer, without I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from microshop_gateway import GatewaySettings, RouteSpec
from microshop_gateway.domain import Balancer, RouteNotFound, RouteTable
from microshop_gateway.settings import DEFAULT_ROUTES

TABLE = RouteTable(DEFAULT_ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "service", "auth"),
    [
        ("POST", "/api/v1/users", "users", "public"),
        ("POST", "/api/v1/users/", "users", "public"),
        ("GET", "/api/v1/users", "users", "token"),
        ("GET", "/api/v1/users/me", "users", "token"),
        ("POST", "/api/v1/auth/refresh", "users", "public"),
        ("GET", "/.well-known/jwks.json", "users", "public"),
        ("GET", "/api/v1/products/p-1", "products", "public"),
        ("DELETE", "/api/v1/cart", "orders", "token"),
        ("GET", "/", "storefront", "optional"),
        ("GET", "/mailbox/abc", "storefront", "optional"),
        ("GET", "/apiary", "storefront", "optional"),  # not under /api on a segment boundary
    ],
)
def test_first_matching_row_wins(method: str, path: str, service: str, auth: str) -> None:
    route = TABLE.match(method, path)

    assert (route.service, route.auth) == (service, auth)


@pytest.mark.parametrize(
    "path",
    [
        "/internal/v1/users/1",
        "/api/v1/nothing",
        "/api/v1/products/../../internal/v1/users/1",
        "/api/v1/products/./x",
        "/api/v1/products//x",
        "/static/..",
        "/.well-known/other",
        "relative",
    ],
)
def test_internal_unknown_and_unsafe_paths_have_no_route(path: str) -> None:
    with pytest.raises(RouteNotFound):
        TABLE.match("GET", path)


def test_blocked_prefixes_win_over_a_table_row() -> None:
    table = RouteTable([RouteSpec(prefix="/internal", service="users", auth="public")])

    with pytest.raises(RouteNotFound):
        table.match("GET", "/internal/v1/users/1")


def test_settings_reject_a_route_to_an_unknown_service() -> None:
    with pytest.raises(ValidationError, match="'billing', which has no upstream URL"):
        GatewaySettings(routes=[{"prefix": "/api/v1/bills", "service": "billing"}])  # type: ignore[list-item]


def test_settings_read_several_instances_and_json_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PRODUCTS_URL", "http://127.0.0.1:1/, http://127.0.0.1:2")
    monkeypatch.setenv("GATEWAY_ROUTES", '[{"prefix": "/api/v1/products", "service": "products", "auth": "public"}]')
    settings = GatewaySettings()

    assert settings.upstreams()["products"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert settings.routes == (RouteSpec(prefix="/api/v1/products", service="products", auth="public"),)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_balancer_round_robin_skips_a_failed_instance_for_the_cooldown() -> None:
    clock = Clock()
    balancer = Balancer(["a", "b", "c"], cooldown=3, clock=clock)

    assert [balancer.pick() for _ in range(4)] == ["a", "b", "c", "a"]
    balancer.failed("c")
    assert [balancer.pick() for _ in range(4)] == ["b", "a", "b", "a"]
    clock.now += 3
    assert [balancer.pick() for _ in range(3)] == ["b", "c", "a"]


def test_balancer_still_hands_out_an_instance_when_all_failed() -> None:
    clock = Clock()
    balancer = Balancer(["a", "b"], cooldown=3, clock=clock)
    balancer.failed("a")
    balancer.failed("b")

    assert [balancer.pick() for _ in range(2)] == ["a", "b"]
    balancer.succeeded("a")
    assert [balancer.pick() for _ in range(2)] == ["a", "a"]

"""The gateway's /readyz reports every upstream; /livez answers regardless."""

from __future__ import annotations

from typing import Any

import httpx

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any


async def test_ready_when_every_upstream_is_ready(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/readyz")

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert {k: checks[k] for k in ("users", "products", "orders", "payments", "notifications", "storefront")} == {
        name: "ok" for name in ("users", "products", "orders", "payments", "notifications", "storefront")
    }


async def test_not_ready_naming_the_upstream_that_is_not(
    make_gateway: GatewayFactory, upstreams: Upstreams, dead_url: str
) -> None:
    upstreams["payments"].ready_status = 503
    async with make_gateway(notifications_url=dead_url) as gateway:
        ready = await gateway.get("/readyz")
        live = await gateway.get("/livez")

    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["payments"].startswith("unavailable") and "answered 503" in checks["payments"]
    assert checks["notifications"].startswith("unavailable") and "unreachable" in checks["notifications"]
    assert checks["orders"] == "ok"
    assert live.status_code == 200


async def test_one_ready_instance_of_two_is_degraded_but_ready(
    make_gateway: GatewayFactory, upstreams: Upstreams, dead_url: str
) -> None:
    async with make_gateway(products_url=f"{upstreams['products'].url},{dead_url}") as gateway:
        response = await gateway.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["products"] == "degraded: 1/2 instances ready"

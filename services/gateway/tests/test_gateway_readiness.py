"""The gateway's /readyz reports every upstream (unready only when it reaches none); /livez answers regardless."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

Upstreams = dict[str, Any]  # name -> EchoUpstream (conftest)
GatewayFactory = Any


async def test_ready_when_every_upstream_is_ready(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    checks = response.json()["checks"]
    assert {k: checks[k] for k in ("users", "products", "orders", "payments", "notifications", "storefront")} == {
        name: "ok" for name in ("users", "products", "orders", "payments", "notifications", "storefront")
    }


async def test_a_service_down_is_named_and_the_gateway_stays_ready_for_the_others(
    make_gateway: GatewayFactory, upstreams: Upstreams, dead_url: str
) -> None:
    upstreams["payments"].ready_status = 503
    async with make_gateway(notifications_url=dead_url) as gateway:
        ready = await gateway.get("/readyz")
        live = await gateway.get("/livez")

    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    checks = ready.json()["checks"]
    assert checks["payments"].startswith("unavailable") and "answered 503" in checks["payments"]
    assert checks["notifications"].startswith("unavailable") and "unreachable" in checks["notifications"]
    assert checks["orders"] == "ok"
    assert live.status_code == 200


async def test_not_ready_when_no_upstream_can_be_reached(make_gateway: GatewayFactory, dead_url: str) -> None:
    names = ("users", "products", "orders", "payments", "notifications", "storefront")
    async with make_gateway(**{f"{name}_url": dead_url for name in names}) as gateway:
        ready = await gateway.get("/readyz")
        live = await gateway.get("/livez")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert all(ready.json()["checks"][name].startswith("unavailable") for name in names)
    assert live.status_code == 200


async def test_one_ready_instance_of_two_is_degraded_but_ready(
    make_gateway: GatewayFactory, upstreams: Upstreams, dead_url: str
) -> None:
    async with make_gateway(products_url=f"{upstreams['products'].url},{dead_url}") as gateway:
        response = await gateway.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["products"] == "degraded: 1/2 instances ready"


async def test_an_instance_failing_readiness_leaves_the_rotation_and_comes_back(
    make_gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    first, second = upstreams["products"], upstreams["products-2"]
    async with make_gateway(products_url=f"{first.url},{second.url}", probe_interval=0.05) as gateway:
        second.ready_status = 503
        await asyncio.sleep(0.3)
        while_unready = [(await gateway.get("/api/v1/products")).headers["x-upstream"] for _ in range(4)]
        report = await gateway.get("/readyz")
        second.ready_status = 200
        await asyncio.sleep(0.3)
        after = [(await gateway.get("/api/v1/products")).headers["x-upstream"] for _ in range(4)]
        recovered = (await gateway.get("/readyz")).json()

    assert while_unready == ["products"] * 4
    assert report.status_code == 200
    assert report.json()["checks"]["products"] == "degraded: 1/2 instances ready"
    products = report.json()["upstreams"]["products"]
    assert products["state"] == "degraded" and products["circuit"] == "closed"
    assert [(i["url"], i["in_rotation"]) for i in products["instances"]] == [(first.url, True), (second.url, False)]
    assert "answered 503" in products["instances"][1]["detail"]
    assert sorted(after) == ["products", "products", "products-2", "products-2"]
    assert all(i["in_rotation"] for i in recovered["upstreams"]["products"]["instances"])


async def test_readyz_reports_every_instance_of_every_upstream(gateway: httpx.AsyncClient) -> None:
    body = (await gateway.get("/readyz")).json()

    assert set(body["upstreams"]) == {"users", "products", "orders", "payments", "notifications", "storefront"}
    for upstream in body["upstreams"].values():
        assert upstream["state"] == "ok" and upstream["circuit"] == "closed"
        assert [instance["detail"] for instance in upstream["instances"]] == ["ok"]

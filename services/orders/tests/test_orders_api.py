"""The orders routes are lean routes (microshop_kit.lean): every answer byte for byte FastAPI's own."""

from __future__ import annotations

import uuid

from microshop_kit.testing import LeanCheck, compare_each_with_fastapi
from microshop_orders.testing import ADDRESS, Harness


async def test_routes_answer_as_fastapi_does(shop: Harness) -> None:
    """Each request is sent twice (FastAPI's own handling, then the lean path), so each write is one the route
    answers again unchanged: the same cart, a replayed Idempotency-Key, a refused cancel."""
    key = {**shop.auth, "Idempotency-Key": str(uuid.uuid4())}
    order = {"shipping_address": ADDRESS, "payment_method_id": "pm_good"}
    checks: list[LeanCheck] = [
        ("PUT", "/api/v1/cart", True, {"json": {"lines": [{"sku": "MUG-1", "quantity": 2}]}, "headers": shop.auth}),
        ("PUT", "/api/v1/cart", False, {"json": {"lines": [{"sku": "MUG-1", "quantity": 0}]}, "headers": shop.auth}),
        ("PUT", "/api/v1/cart", True, {"json": {"lines": []}}),  # no token
        ("GET", "/api/v1/cart", True, {"headers": shop.auth}),
        ("POST", "/api/v1/orders", True, {"json": order, "headers": key}),
        ("POST", "/api/v1/orders", True, {"json": order, "headers": shop.auth}),  # no Idempotency-Key
        ("POST", "/api/v1/orders", False, {"json": {"payment_method_id": "pm_good"}, "headers": key}),
        ("GET", "/api/v1/orders?limit=5", True, {"headers": shop.auth}),
        ("GET", "/api/v1/orders?limit=0", False, {"headers": shop.auth}),
        ("GET", f"/api/v1/orders/{uuid.uuid4()}", True, {"headers": shop.auth}),
        ("GET", "/api/v1/admin/orders?status=CONFIRMED", True, {"headers": shop.admin}),
        ("GET", "/api/v1/admin/orders", True, {"headers": shop.auth}),  # not an admin
        ("GET", "/api/v1/admin/orders?status=LOST", False, {"headers": shop.admin}),
    ]
    statuses = await compare_each_with_fastapi(shop.client, checks)
    assert statuses == [200, 422, 401, 200, 201, 400, 422, 200, 422, 404, 200, 403, 422]

    order_id = (await shop.client.get("/api/v1/orders", headers=shop.auth)).json()["items"][0]["id"]
    await shop.client.post(f"/api/v1/orders/{order_id}/cancel", headers=shop.auth)
    assert (await shop.wait_order(order_id, until=("CONFIRMED", "CANCELLING")))["status"] == "CANCELLED"
    after: list[LeanCheck] = [
        ("GET", f"/api/v1/orders/{order_id}", True, {"headers": shop.auth}),
        ("POST", f"/api/v1/orders/{order_id}/cancel", True, {"headers": shop.auth}),  # again
        ("POST", f"/api/v1/admin/orders/{order_id}/deliver", True, {"headers": shop.admin}),  # cancelled: 409
    ]
    statuses = await compare_each_with_fastapi(shop.client, after)
    assert statuses == [200, 409, 409]  # cancelled already: 409 both times

"""Many buyers of one hot SKU at once, on SQLite and PostgreSQL: the stock sells exactly out, never over."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from microshop_products.testing import ServiceFactory

CATALOG: dict[str, Any] = {
    "currency": "EUR",
    "categories": [{"slug": "coffee", "name": "Coffee", "parent": None}],
    "products": [{"sku": "HOT", "category": "coffee", "name": "Hot", "price": 100, "description": "", "stock": 50}],
}


async def test_two_hundred_buyers_of_fifty_units_exactly_fifty_win_every_time(make_service: ServiceFactory) -> None:
    async with make_service(CATALOG) as shop:
        for round_ in range(3):
            if round_:
                await shop.set_on_hand("HOT", 50)
            bodies = [{"order_id": str(uuid.uuid4()), "lines": [{"sku": "HOT", "quantity": 1}]} for _ in range(200)]
            responses = await asyncio.gather(
                *(shop.client.post("/internal/v1/reservations", json=body) for body in bodies)
            )
            won = [r for r in responses if r.status_code == 201]
            lost = [r for r in responses if r.status_code != 201]
            assert len(won) == 50, f"round {round_}: {len(won)} won"
            assert {r.status_code for r in lost} == {409}
            assert {r.json()["type"] for r in lost} == {"/problems/out-of-stock"}
            assert all(r.json()["skus"] == ["HOT"] for r in lost)
            stock = await shop.stock("HOT")
            assert stock["on_hand"] == 0
            assert stock["reserved"] == 50 * (round_ + 1)

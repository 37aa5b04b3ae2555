"""The platform fixture's fault tools: kill a service, restart it, run a second instance, read its database."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import httpx
import pytest

from microshop_launcher import Platform

from .conftest import Shop

pytestmark = pytest.mark.e2e


async def _invariants(platform: Platform) -> None:
    products = await platform.open_database("products")
    orders = await platform.open_database("orders")
    try:
        broken = await products.fetch(
            "SELECT sku FROM stock WHERE on_hand + reserved + sold != received OR on_hand < 0"
        )
        assert broken == [], "stock is conserved and never negative"
        pending = await orders.fetchval("SELECT count(*) FROM orders WHERE status = 'PENDING'")
        assert pending == 0, "every order ended"
    finally:
        await products.close()
        await orders.close()


def test_notifications_killed_during_checkouts_then_each_email_once(
    platform: Platform, shop_for: Callable[[Platform], Shop]
) -> None:
    shop = shop_for(platform)
    shop.sign_up()
    shop.sign_in()
    sku = next(str(p["sku"]) for p in shop.products(limit=50) if int(p["available"]) >= 10)
    platform.kill("notifications", sig=signal.SIGKILL)
    orders = []
    for _ in range(3):  # a notifications outage never blocks a checkout
        shop.fill_cart([(sku, 1)])
        response = shop.place_order(shop.card())
        assert response.json()["status"] == "CONFIRMED", response.text
        orders.append(response.json()["id"])
    platform.restart("notifications")
    shop.wait_mails(len(orders), subject_has="confirmed", timeout=30)
    confirmations = [m["subject"].lower() for m in shop.mails_to() if "confirmed" in m["subject"].lower()]
    for order_id in orders:
        assert sum(order_id[:8].lower() in subject for subject in confirmations) == 1, confirmations
    asyncio.run(_invariants(platform))


def test_a_second_instance_serves_the_same_data(platform: Platform) -> None:
    second = platform.start_instance("products")
    try:
        first = httpx.get(f"{platform.url('products')}/api/v1/products", params={"limit": 5}, timeout=10).json()
        other = httpx.get(f"{platform.url('products', 1)}/api/v1/products", params={"limit": 5}, timeout=10).json()
        assert first["items"] == other["items"]
    finally:
        second.stop()

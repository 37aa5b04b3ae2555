"""A broker outage while orders are confirmed: checkouts go on, and every email still arrives exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from microshop_launcher import Platform

from .conftest import Shop

pytestmark = pytest.mark.e2e


def _buy(shop: Shop, sku: str) -> str:
    shop.fill_cart([(sku, 1)])
    response = shop.place_order(shop.card())
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CONFIRMED", order
    return str(order["id"])


def test_broker_down_then_back_every_email_once(platform: Platform, shop_for: Callable[[Platform], Shop]) -> None:
    shop = shop_for(platform)
    shop.sign_up()
    shop.sign_in()
    sku = next(str(p["sku"]) for p in shop.products(limit=50) if int(p["available"]) >= 10)

    before = [_buy(shop, sku) for _ in range(2)]
    platform.stop_broker()
    during = [_buy(shop, sku) for _ in range(3)]  # the saga is HTTP: checkouts do not need the broker
    time.sleep(1.5)  # the relays find the broker down and keep the events in their outboxes
    assert platform.broker is not None
    platform.start_broker()
    after = [_buy(shop, sku) for _ in range(1)]

    orders = before + during + after
    mails = shop.wait_mails(len(orders), subject_has="", timeout=60)
    time.sleep(2)  # let any duplicate arrive before counting
    mails = shop.mails_to()
    confirmations = [m for m in mails if "confirmed" in m["subject"].lower()]
    for order_id in orders:
        matching = [m for m in confirmations if order_id[:8].lower() in m["subject"].lower()]
        assert len(matching) == 1, (order_id, [m["subject"] for m in confirmations])

"""The walking skeleton end to end: every service a separate process, driven only through the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from microshop_launcher import Platform

from .conftest import DECLINED_CARD, Shop

pytestmark = pytest.mark.e2e


def _in_stock(shop: Shop, count: int) -> list[dict[str, object]]:
    products = [p for p in shop.products(limit=50) if int(p["available"]) >= 5]
    assert len(products) >= count, "the seeded catalog should have products in stock"
    return products[:count]


def checkout_slice(platform: Platform, shop: Shop) -> None:
    """Register, sign in, browse, fill the cart, pay by card, get the order confirmed and the email sent once."""
    shop.sign_up()
    shop.sign_in()
    first, second = _in_stock(shop, 2)
    before = shop.availability(str(first["sku"]), str(second["sku"]))
    cart = shop.fill_cart([(str(first["sku"]), 2), (str(second["sku"]), 1)])
    assert cart["total"] == 2 * int(first["price"]) + int(second["price"])  # type: ignore[call-overload]

    key = str(uuid.uuid4())
    response = shop.place_order(shop.card(), key=key)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CONFIRMED", order
    assert order["total"] == cart["total"]
    assert response.headers["location"] == f"/api/v1/orders/{order['id']}"
    assert [entry["status"] for entry in order["timeline"]] == ["PENDING", "CONFIRMED"]

    replay = shop.place_order(order["payment_method_id"], key=key)
    assert (replay.status_code, replay.json()) == (201, order), "the same key replays the first answer"
    assert shop.order(order["id"])["status"] == "CONFIRMED"
    listed = shop.http.get("/api/v1/orders", headers=shop.auth).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]], "one order for one key"

    after = shop.availability(str(first["sku"]), str(second["sku"]))
    assert after[str(first["sku"])] == before[str(first["sku"])] - 2
    assert after[str(second["sku"])] == before[str(second["sku"])] - 1

    mails = shop.wait_mails(1, subject_has=order["id"][:8])
    assert len(mails) == 1, mails
    assert str(first["name"]) in mails[0]["text"]


def declined_slice(shop: Shop) -> None:
    """A declined card rejects the order with a readable reason, and the stock comes back."""
    shop.sign_up()
    shop.sign_in()
    (product,) = _in_stock(shop, 1)
    sku = str(product["sku"])
    before = shop.availability(sku)[sku]
    shop.fill_cart([(sku, 3)])
    response = shop.place_order(shop.card(DECLINED_CARD))
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "REJECTED"
    assert "declined" in order["reason"]
    assert shop.availability(sku)[sku] == before, "the reservation is released"
    cart = shop.http.get("/api/v1/cart", headers=shop.auth).json()
    assert [line["sku"] for line in cart["lines"]] == [sku], "a rejected order leaves the cart as it was"


def test_checkout_confirms_and_emails_once(platform: Platform, shop_for: Callable[[Platform], Shop]) -> None:
    checkout_slice(platform, shop_for(platform))


def test_declined_card_rejects_and_releases_stock(platform: Platform, shop_for: Callable[[Platform], Shop]) -> None:
    declined_slice(shop_for(platform))


def test_storefront_and_mailbox_render_through_the_gateway(platform: Platform) -> None:
    home = httpx.get(f"{platform.gateway_url}/", timeout=10)
    assert home.status_code == 200
    assert "text/html" in home.headers["content-type"]
    names = [p["name"] for p in httpx.get(f"{platform.gateway_url}/api/v1/products", timeout=10).json()["items"]]
    assert any(name in home.text for name in names), "the catalog is on the home page"
    mailbox = httpx.get(f"{platform.gateway_url}/mailbox", timeout=10)
    assert mailbox.status_code == 200


def test_internal_routes_are_not_reachable_through_the_gateway(platform: Platform) -> None:
    response = httpx.post(
        f"{platform.gateway_url}/internal/v1/reservations", json={"order_id": "x", "lines": []}, timeout=10
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("method", "path", "content", "expected"),
    [
        ("PUT", "/api/v1/cart", b"{not json", 422),
        ("PUT", "/api/v1/cart", b'{"lines": [{"sku": "X", "quantity": "many"}]}', 422),
        ("PUT", "/api/v1/cart", b'{"lines": [{"sku": "X", "quantity": -1}]}', 422),
        ("PUT", "/api/v1/cart", b'{"lines": [], "price": 1}', 422),
        ("POST", "/api/v1/users", b'{"email": "a@b.c", "password": "x", "name": "n", "role": "admin"}', 422),
        ("PUT", "/api/v1/cart", b'{"lines": [' + b'{"sku": "X", "quantity": 1},' * 200_000 + b"]}", 413),
    ],
)
def test_bad_input_gets_a_problem_never_a_500(
    platform: Platform, shop_for: Callable[[Platform], Shop], method: str, path: str, content: bytes, expected: int
) -> None:
    shop = shop_for(platform)
    shop.sign_up()
    shop.sign_in()
    headers = {**shop.auth, "Content-Type": "application/json"}
    response = shop.http.request(method, path, content=content, headers=headers)
    assert response.status_code == expected, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == expected

"""Catalog administration over HTTP: role checks, create, change, deactivate, set stock, and their events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from microshop_kit.testing import JwtIssuer
from microshop_products.domain import product_id
from microshop_products.testing import Service, ServiceFactory

CATALOG: dict[str, Any] = {
    "currency": "EUR",
    "categories": [
        {"slug": "coffee", "name": "Coffee", "parent": None},
        {"slug": "tea", "name": "Tea", "parent": None},
    ],
    "products": [
        {"sku": "BEANS", "category": "coffee", "name": "Beans", "price": 1200, "description": "Roasted", "stock": 10},
    ],
}
BEANS = product_id("BEANS")
NEW = {"sku": "KETTLE", "name": "Gooseneck Kettle", "description": "For pour-over", "category": "coffee", "price": 4900}


@pytest.fixture
async def shop(make_service: ServiceFactory) -> AsyncIterator[Service]:
    async with make_service(CATALOG) as service:
        yield service


@pytest.fixture
def admin(issuer: JwtIssuer) -> dict[str, str]:
    return issuer.headers(roles=["admin"])


ROUTES = [
    ("POST", "/api/v1/admin/products", NEW),
    ("GET", f"/api/v1/admin/products/{BEANS}", None),
    ("PATCH", f"/api/v1/admin/products/{BEANS}", {"price": 1}),
    ("POST", f"/api/v1/admin/products/{BEANS}/deactivate", None),
    ("PUT", "/api/v1/admin/stock/BEANS", {"on_hand": 0}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_admin_routes_refuse_no_token_and_a_customer(
    shop: Service, issuer: JwtIssuer, method: str, path: str, body: Any
) -> None:
    anonymous = await shop.client.request(method, path, json=body)
    assert anonymous.status_code == 401
    customer = await shop.client.request(method, path, json=body, headers=issuer.headers(roles=["customer"]))
    assert customer.status_code == 403
    assert customer.json()["type"] == "/problems/forbidden"
    assert await shop.stock("BEANS") == {"on_hand": 10, "reserved": 0, "sold": 0, "received": 10}
    assert (await shop.client.get(f"/api/v1/products/{BEANS}")).json()["price"] == 1200
    assert await shop.events("product.created.v1") == []


async def test_create_product_lists_it_with_its_stock_and_publishes_created(
    shop: Service, admin: dict[str, str]
) -> None:
    response = await shop.client.post("/api/v1/admin/products", json={**NEW, "stock": 12}, headers=admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/api/v1/admin/products/{body['id']}"
    assert (body["sku"], body["available"], body["active"], body["currency"]) == ("KETTLE", 12, True, "EUR")
    assert body["image_url"] == f"/api/v1/products/{body['id']}/image.svg"
    assert await shop.stock("KETTLE") == {"on_hand": 12, "reserved": 0, "sold": 0, "received": 12}
    found = (await shop.client.get("/api/v1/products", params={"q": "goosen"})).json()["items"]
    assert [item["sku"] for item in found] == ["KETTLE"]
    [event] = await shop.events("product.created.v1")
    assert event["data"] == {
        "product_id": body["id"],
        "sku": "KETTLE",
        "name": NEW["name"],
        "price": 4900,
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"sku": "BEANS"}, 409, None),
        ({"category": "nope"}, 422, "category"),
        ({"price": -1}, 422, "price"),
        ({"price": "12"}, 422, "price"),
        ({"image_url": "https://evil.example/x.png"}, 422, "image_url"),
        ({"image_url": "//evil.example/x.png"}, 422, "image_url"),
        ({"role": "x"}, 422, "role"),
    ],
)
async def test_create_refuses_bad_products(
    shop: Service, admin: dict[str, str], change: dict[str, Any], status: int, field: str | None
) -> None:
    response = await shop.client.post("/api/v1/admin/products", json={**NEW, **change}, headers=admin)
    assert response.status_code == status, response.text
    if field:
        assert any(error["loc"][-1] == field for error in response.json()["errors"]), response.json()
    assert await shop.events("product.created.v1") == []


async def test_price_or_name_change_publishes_updated_and_other_changes_do_not(
    shop: Service, admin: dict[str, str]
) -> None:
    path = f"/api/v1/admin/products/{BEANS}"
    response = await shop.client.patch(
        path, json={"description": "Dark roast", "image_url": "/img/b.png"}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert (response.json()["description"], response.json()["image_url"]) == ("Dark roast", "/img/b.png")
    assert await shop.events("product.updated.v1") == []
    assert (await shop.client.patch(path, json={"price": 1200}, headers=admin)).status_code == 200  # same price
    assert await shop.events("product.updated.v1") == []
    response = await shop.client.patch(path, json={"price": 1500, "name": "House Beans"}, headers=admin)
    assert response.json()["price"] == 1500
    [event] = await shop.events("product.updated.v1")
    assert event["data"] == {
        "product_id": BEANS,
        "sku": "BEANS",
        "name": "House Beans",
        "price": 1500,
        "currency": "EUR",
    }
    public = (await shop.client.get(f"/api/v1/products/{BEANS}")).json()
    assert (public["name"], public["price"]) == ("House Beans", 1500)
    assert [i["sku"] for i in (await shop.client.get("/api/v1/products", params={"q": "house"})).json()["items"]] == [
        "BEANS"
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [({"image_url": "http://x/y"}, 422), ({"name": None}, 422), ({"sku": "X"}, 422), ({"category": "nope"}, 422)],
)
async def test_patch_refuses_bad_changes(
    shop: Service, admin: dict[str, str], body: dict[str, Any], status: int
) -> None:
    response = await shop.client.patch(f"/api/v1/admin/products/{BEANS}", json=body, headers=admin)
    assert response.status_code == status, response.text


async def test_patch_of_an_unknown_product_is_a_404(shop: Service, admin: dict[str, str]) -> None:
    response = await shop.client.patch(f"/api/v1/admin/products/{product_id('NOPE')}", json={"price": 1}, headers=admin)
    assert response.status_code == 404


async def test_deactivate_hides_the_product_and_patch_brings_it_back(shop: Service, admin: dict[str, str]) -> None:
    response = await shop.client.post(f"/api/v1/admin/products/{BEANS}/deactivate", headers=admin)
    assert response.status_code == 200 and response.json()["active"] is False
    assert (await shop.client.get(f"/api/v1/products/{BEANS}")).status_code == 404
    assert (await shop.client.get("/api/v1/products")).json()["items"] == []
    assert (await shop.client.get(f"/api/v1/admin/products/{BEANS}", headers=admin)).json()["active"] is False
    await shop.client.patch(f"/api/v1/admin/products/{BEANS}", json={"active": True}, headers=admin)
    assert (await shop.client.get(f"/api/v1/products/{BEANS}")).status_code == 200


async def test_set_stock_receives_and_writes_off_keeping_the_books_balanced(
    shop: Service, admin: dict[str, str]
) -> None:
    reserved = await shop.client.post(
        "/internal/v1/reservations", json={"order_id": "o-1", "lines": [{"sku": "BEANS", "quantity": 3}]}
    )
    assert reserved.status_code == 201
    response = await shop.client.put("/api/v1/admin/stock/BEANS", json={"on_hand": 20}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sku": "BEANS",
        "on_hand": 20,
        "reserved": 3,
        "sold": 0,
        "received": 23,
        "low_threshold": 5,
    }
    response = await shop.client.put("/api/v1/admin/stock/BEANS", json={"on_hand": 0}, headers=admin)
    assert response.json()["received"] == 3  # written off: only the reserved units remain
    assert (await shop.client.post("/internal/v1/reservations/o-1/commit")).status_code == 200
    assert await shop.stock("BEANS") == {"on_hand": 0, "reserved": 0, "sold": 3, "received": 3}


@pytest.mark.parametrize(("sku", "body", "status"), [("NOPE", {"on_hand": 1}, 404), ("BEANS", {"on_hand": -1}, 422)])
async def test_set_stock_refuses_unknown_skus_and_negative_stock(
    shop: Service, admin: dict[str, str], sku: str, body: dict[str, Any], status: int
) -> None:
    response = await shop.client.put(f"/api/v1/admin/stock/{sku}", json=body, headers=admin)
    assert response.status_code == status

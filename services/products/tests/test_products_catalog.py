"""The public catalog over HTTP: listing, filters, sorting, paging, details, images, caching, availability."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microshop_kit.testing import JwtIssuer
from microshop_products.seed import load_catalog
from microshop_products.testing import Service, ServiceFactory

DEMO = load_catalog()


@pytest.fixture
async def shop(make_service: ServiceFactory) -> AsyncIterator[Service]:
    async with make_service() as service:  # the demo catalog
        yield service


async def products(shop: Service, **params: Any) -> dict[str, Any]:
    response = await shop.client.get("/api/v1/products", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_products(shop: Service, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await products(shop, page=page, limit=100, **params)
        items += body["items"]
        if len(items) >= body["total"] or not body["items"]:
            return items
        page += 1


# ------------------------------------------------------------------------------------------------ listing


async def test_listing_pages_the_catalog_by_name(shop: Service) -> None:
    body = await products(shop)
    assert (body["page"], body["limit"], body["total"]) == (1, 20, len(DEMO["products"]))
    assert len(body["items"]) == 20
    names = [item["name"] for item in body["items"]]
    assert names == sorted(names)
    item = body["items"][0]
    assert set(item) == {"id", "sku", "name", "description", "category", "price", "currency", "image_url", "available"}
    assert item["currency"] == "EUR"
    assert item["image_url"] == f"/api/v1/products/{item['id']}/image.svg"
    assert 20 <= item["available"] <= 200


async def test_pages_cover_the_catalog_once(shop: Service) -> None:
    seen: list[str] = []
    for page in range(1, 5):
        seen += [item["sku"] for item in (await products(shop, page=page, limit=20))["items"]]
    assert len(seen) == len(set(seen)) == len(DEMO["products"])
    beyond = await products(shop, page=10, limit=20)
    assert beyond["items"] == []
    assert beyond["total"] == len(DEMO["products"])


async def test_limit_up_to_one_hundred(shop: Service) -> None:
    assert len((await products(shop, limit=100))["items"]) == len(DEMO["products"])
    assert len((await products(shop, limit=1))["items"]) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"limit": 0}, "limit"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"sort": "popularity"}, "sort"),
        ({"min_price": -1}, "min_price"),
        ({"in_stock": "perhaps"}, "in_stock"),
        ({"min_price": 500, "max_price": 100}, "max_price"),
        ({"q": "x" * 201}, "q"),
        ({"q": "x" * 10_000}, "q"),
    ],
)
async def test_bad_listing_parameters_are_a_422_naming_the_field(
    shop: Service, params: dict[str, Any], field: str
) -> None:
    response = await shop.client.get("/api/v1/products", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/validation"
    assert any(error["loc"][-1] == field for error in problem["errors"]), problem


async def test_filter_by_category_includes_its_subcategories(shop: Service) -> None:
    coffee = await all_products(shop, category="coffee")
    assert coffee and {item["category"] for item in coffee} == {"coffee"}
    assert len(coffee) == sum(1 for p in DEMO["products"] if p["category"] == "coffee")
    books = await all_products(shop, category="books")
    assert {item["category"] for item in books} == {"books", "cookbooks"}
    assert await all_products(shop, category="no-such-category") == []


async def test_filter_by_price_range(shop: Service) -> None:
    items = await all_products(shop, min_price=1000, max_price=2000)
    assert items and all(1000 <= item["price"] <= 2000 for item in items)
    assert len(items) == sum(1 for p in DEMO["products"] if 1000 <= p["price"] <= 2000)


async def test_filter_in_stock(shop: Service) -> None:
    await shop.set_on_hand("TEA-003", 0)
    sold_out = await all_products(shop, in_stock="false")
    assert [item["sku"] for item in sold_out] == ["TEA-003"]
    in_stock = await all_products(shop, in_stock="true")
    assert "TEA-003" not in {item["sku"] for item in in_stock}
    assert len(in_stock) == len(DEMO["products"]) - 1


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [("price", "price", False), ("-price", "price", True), ("name", "name", False)],
)
async def test_sort(shop: Service, sort: str, key: str, reverse: bool) -> None:
    values = [item[key] for item in await all_products(shop, sort=sort)]
    assert values == sorted(values, reverse=reverse)


async def test_sort_newest_first(shop: Service) -> None:
    await shop.db.execute("UPDATE products SET created_at = '2999-01-01T00:00:00.000000+00:00' WHERE sku = 'AUD-003'")
    assert (await products(shop, sort="newest"))["items"][0]["sku"] == "AUD-003"


async def test_search_finds_words_of_the_name_or_description_and_combines_with_filters(shop: Service) -> None:
    by_name = await all_products(shop, q="ESPRESSO")
    assert {"COF-003", "KIT-008"} <= {item["sku"] for item in by_name}
    for item in by_name:
        assert "espresso" in (item["name"] + item["description"]).lower()
    assert await all_products(shop, q="%") == []  # no letters or digits: nothing to find
    combined = await all_products(shop, q="espresso", category="kitchen")
    assert [item["sku"] for item in combined] == ["KIT-008"]


async def test_inactive_products_are_not_listed(shop: Service) -> None:
    await shop.db.execute("UPDATE products SET active = 0 WHERE sku = 'COF-001'")
    assert "COF-001" not in {item["sku"] for item in await all_products(shop)}


# ------------------------------------------------------------------------------------------------- detail


async def test_product_detail(shop: Service) -> None:
    listed = (await products(shop, limit=1))["items"][0]
    response = await shop.client.get(f"/api/v1/products/{listed['id']}")
    assert response.status_code == 200
    assert response.json() == listed


@pytest.mark.parametrize("product_id", [str(uuid.uuid4()), "not-a-uuid", "1"])
async def test_unknown_product_is_a_404_problem(shop: Service, product_id: str) -> None:
    response = await shop.client.get(f"/api/v1/products/{product_id}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-found"


async def test_inactive_product_detail_is_a_404(shop: Service) -> None:
    product = (await products(shop, limit=1))["items"][0]
    await shop.db.execute("UPDATE products SET active = 0 WHERE id = :id", {"id": product["id"]})
    assert (await shop.client.get(f"/api/v1/products/{product['id']}")).status_code == 404


async def test_categories_with_parent_and_product_count(shop: Service) -> None:
    response = await shop.client.get("/api/v1/categories")
    assert response.status_code == 200
    categories = {item["slug"]: item for item in response.json()["items"]}
    assert set(categories) == {category["slug"] for category in DEMO["categories"]}
    assert categories["cookbooks"]["parent"] == "books"
    assert categories["coffee"]["parent"] is None
    assert categories["coffee"]["product_count"] == sum(1 for p in DEMO["products"] if p["category"] == "coffee")


# ----------------------------------------------------------------------------------------------- caching


@pytest.mark.parametrize("path", ["/api/v1/products?limit=5", "/api/v1/categories", "detail"])
async def test_reads_carry_an_etag_and_answer_304_when_unchanged(shop: Service, path: str) -> None:
    if path == "detail":
        path = f"/api/v1/products/{(await products(shop, limit=1))['items'][0]['id']}"
    first = await shop.client.get(path)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=30"
    again = await shop.client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = await shop.client.get(path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert other.json() == first.json()


async def test_etag_changes_when_the_catalog_changes(shop: Service) -> None:
    first = await shop.client.get("/api/v1/products", params={"limit": 5})
    sku = first.json()["items"][0]["sku"]
    await shop.db.execute("UPDATE products SET price = price + 1 WHERE sku = :sku", {"sku": sku})
    # A change made behind the service's back shows once its response cache lets go (at most
    # response_cache_seconds); forget the kept answers now instead of waiting.
    shop.app.state.kit.response_cache.clear()
    second = await shop.client.get(
        "/api/v1/products", params={"limit": 5}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]


async def test_repeated_catalog_reads_are_served_from_the_response_cache(shop: Service) -> None:
    cache = shop.app.state.kit.response_cache
    first = await shop.client.get("/api/v1/products", params={"limit": 5})
    sku = first.json()["items"][0]["sku"]
    await shop.db.execute("UPDATE products SET price = price + 1 WHERE sku = :sku", {"sku": sku})
    hits = cache.hits
    second = await shop.client.get("/api/v1/products", params={"limit": 5})
    not_modified = await shop.client.get(
        "/api/v1/products", params={"limit": 5}, headers={"If-None-Match": first.headers["etag"]}
    )

    assert cache.hits == hits + 2
    assert second.content == first.content  # the kept answer, not the database's new price
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]  # per-request headers are fresh
    assert not_modified.status_code == 304


async def test_a_write_through_the_service_is_seen_by_the_next_read(shop: Service, issuer: JwtIssuer) -> None:
    before = (await shop.client.get("/api/v1/products", params={"limit": 5})).json()["items"][0]
    response = await shop.client.put(
        f"/api/v1/admin/stock/{before['sku']}",
        json={"on_hand": before["available"] + 7},
        headers=issuer.headers(roles=["admin"]),
    )
    assert response.status_code == 200, response.text
    after = (await shop.client.get("/api/v1/products", params={"limit": 5})).json()["items"][0]

    assert after["sku"] == before["sku"]
    assert after["available"] == before["available"] + 7


async def test_requests_with_credentials_never_get_a_kept_answer(shop: Service) -> None:
    kept = await shop.client.get("/api/v1/products", params={"limit": 5})
    sku = kept.json()["items"][0]["sku"]
    await shop.db.execute("UPDATE products SET price = price + 1 WHERE sku = :sku", {"sku": sku})
    personal = await shop.client.get("/api/v1/products", params={"limit": 5}, headers={"Cookie": "session=1"})

    assert personal.json()["items"][0]["price"] == kept.json()["items"][0]["price"] + 1


# ------------------------------------------------------------------------------------------------ images


async def test_product_image_is_an_svg_drawn_by_the_service(shop: Service) -> None:
    product = (await products(shop, category="audio", limit=1))["items"][0]
    response = await shop.client.get(product["image_url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "etag" in response.headers
    root = ET.fromstring(response.content)  # noqa: S314 - our own SVG
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert product["name"] in "".join(root.itertext()) or product["name"][:20] in "".join(root.itertext())
    assert b"http://" not in response.content.replace(b"http://www.w3.org/2000/svg", b"")
    assert (await shop.client.get(f"/api/v1/products/{uuid.uuid4()}/image.svg")).status_code == 404


async def test_product_image_escapes_the_name(make_service: ServiceFactory) -> None:
    catalog = {
        "currency": "EUR",
        "categories": [{"slug": "odd", "name": "Odd & Ends", "parent": None}],
        "products": [
            {
                "sku": "X-1",
                "category": "odd",
                "name": "<script>alert(1)</script> & co",
                "price": 1,
                "description": "",
                "stock": 1,
            }
        ],
    }
    async with make_service(catalog) as shop:
        item = (await products(shop))["items"][0]
        response = await shop.client.get(item["image_url"])
        assert b"<script>" not in response.content
        text = "".join(ET.fromstring(response.content).itertext())  # noqa: S314 - our own SVG
        assert "<script>alert(1)</script>" in text  # as text, not markup
        assert "& co" in text
        assert "default-src 'none'" in response.headers["content-security-policy"]


# ------------------------------------------------------------------------------------------- availability


async def test_availability_of_known_skus(shop: Service) -> None:
    await shop.set_on_hand("COF-001", 7)
    response = await shop.client.get("/api/v1/availability", params=[("sku", "COF-001"), ("sku", "NOPE")])
    assert response.status_code == 200
    assert response.json() == {"availability": {"COF-001": 7}}


@pytest.mark.parametrize("query", ["", "sku=", "sku=a%20b", "&".join(["sku=A"] * 101)])
async def test_availability_needs_one_to_a_hundred_skus(shop: Service, query: str) -> None:
    response = await shop.client.get(f"/api/v1/availability?{query}")
    assert response.status_code == 422
    assert "sku" in response.json()["detail"]


# --------------------------------------------------------------------------------------------- internal


async def test_internal_products_by_sku_include_inactive_ones(shop: Service) -> None:
    await shop.db.execute("UPDATE products SET active = 0 WHERE sku = 'TEA-002'")
    response = await shop.client.get(
        "/internal/v1/products", params=[("sku", "TEA-001"), ("sku", "TEA-002"), ("sku", "NOPE")]
    )
    assert response.status_code == 200
    items = {item["sku"]: item for item in response.json()["items"]}
    assert set(items) == {"TEA-001", "TEA-002"}
    assert items["TEA-002"]["active"] is False
    assert set(items["TEA-001"]) == {"id", "sku", "name", "price", "currency", "active"}
    assert items["TEA-001"]["price"] == next(p["price"] for p in DEMO["products"] if p["sku"] == "TEA-001")

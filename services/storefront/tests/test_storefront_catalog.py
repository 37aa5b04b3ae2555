"""Catalog and product pages rendered from a real HTTP stand-in of the products API."""

from __future__ import annotations

import time
from typing import Any

import httpx

StorefrontFactory = Any


async def test_catalog_shows_names_prices_availability_and_images(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>Catalog — microshop</title>" in page
    assert '<a class="brand" href="/">microshop</a>' in page
    assert "Blue Mug" in page and "€12.99" in page and "In stock" in page
    assert "Tiny Mug" in page and "€5.50" in page and "Only 2 left" in page
    assert 'src="/api/v1/products/p-1/image.svg"' in page
    assert 'href="/static/shop.css"' in page
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_catalog_lists_categories_and_paginates(storefront: httpx.AsyncClient, apis: Any) -> None:
    first = await storefront.get("/")
    second = await storefront.get("/", params={"page": 2})

    assert "Mugs" in first.text and "Tea &amp; Infusions" in first.text
    assert "Page 1 of 2" in first.text and 'href="/?page=2"' in first.text
    assert "Green Tea &lt;Sencha&gt;" in second.text  # names are escaped
    assert "€1,234.56" in second.text and "Out of stock" in second.text
    assert 'href="/?page=1"' in second.text
    assert apis.queries[-1] == {"page": "2", "limit": "2"}


async def test_category_filter_is_passed_to_the_products_api(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get("/", params={"category": "tea"})

    assert response.status_code == 200
    assert apis.queries[-1] == {"page": "1", "limit": "2", "category": "tea"}
    assert "<title>Tea &amp; Infusions — microshop</title>" in response.text
    assert "Green Tea" in response.text and "Blue Mug" not in response.text
    assert 'href="/?category=tea" aria-current="page"' in response.text


async def test_unknown_category_is_a_404_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/", params={"category": "nope"})

    assert response.status_code == 404
    assert "There is no category" in response.text


async def test_bad_query_values_are_422_problems(storefront: httpx.AsyncClient, apis: Any) -> None:
    for params in ({"page": "0"}, {"page": "x"}, {"category": "../etc"}):
        response = await storefront.get("/", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    assert apis.queries == []


async def test_product_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/products/p-1")

    assert response.status_code == 200
    assert "<title>Blue Mug — microshop</title>" in response.text
    assert "A sturdy blue mug." in response.text and "€12.99" in response.text and "SKU MUG-1" in response.text


async def test_unknown_product_is_a_404_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/products/p-404")

    assert response.status_code == 404
    assert "There is no such product." in response.text


async def test_products_down_gives_a_friendly_503_page_fast(make_storefront: StorefrontFactory, dead_url: str) -> None:
    async with make_storefront(products_url=dead_url) as storefront:
        started = time.perf_counter()
        catalog = await storefront.get("/")
        product = await storefront.get("/products/p-1")
        elapsed = time.perf_counter() - started

    for response in (catalog, product):
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert "unavailable right now" in response.text
        assert "microshop" in response.text  # the shop's layout, not a bare error
    assert elapsed < 2


async def test_static_css_is_served(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/static/shop.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert ".grid" in response.text


async def test_pages_answer_head_requests(storefront: httpx.AsyncClient) -> None:
    response = await storefront.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")

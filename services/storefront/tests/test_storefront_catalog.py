"""Home, catalog, search and product pages rendered from a real HTTP stand-in of the gateway's API."""

from __future__ import annotations

import time
from typing import Any

import httpx

StorefrontFactory = Any


async def test_home_shows_new_products_and_categories(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>Home — microshop</title>" in page
    assert "Blue Mug" in page and "€12.99" in page and "In stock" in page
    assert "Tea &amp; Infusions" in page and 'href="/catalog?category=tea"' in page
    assert 'src="/api/v1/products/p-1/image.svg"' in page
    assert apis.queries[-1]["sort"] == "newest"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_catalog_lists_categories_and_paginates(storefront: httpx.AsyncClient, apis: Any) -> None:
    first = await storefront.get("/catalog")
    second = await storefront.get("/catalog", params={"page": 2})

    assert "Mugs" in first.text and "Tea &amp; Infusions" in first.text
    assert "Page 1 of 2" in first.text and 'href="/catalog?page=2"' in first.text
    assert "Green Tea &lt;Sencha&gt;" in second.text  # names are escaped
    assert "€1,234.56" in second.text and "Out of stock" in second.text
    assert 'href="/catalog?page=1"' in second.text
    assert apis.queries[-1] == {"page": "2", "limit": "2"}


async def test_filters_and_sort_are_passed_to_the_products_api(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get(
        "/catalog",
        params={"category": "tea", "min_price": "5", "max_price": "12.50", "in_stock": "1", "sort": "-price"},
    )

    assert response.status_code == 200
    assert apis.queries[-1] == {
        "category": "tea",
        "min_price": "500",
        "max_price": "1250",
        "in_stock": "true",
        "sort": "-price",
        "page": "1",
        "limit": "2",
    }
    assert "<title>Tea &amp; Infusions — microshop</title>" in response.text
    assert 'value="12.50"' in response.text  # the filter is shown back as typed, in whole units
    assert 'aria-current="page">Tea &amp; Infusions' in response.text


async def test_a_price_that_is_not_a_number_is_explained_not_sent(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get("/catalog", params={"min_price": "cheap", "max_price": "3", "sort": "bogus"})

    assert response.status_code == 200
    assert "Enter a price such as 12.50." in response.text
    assert apis.queries[-1] == {"max_price": "300", "page": "1", "limit": "2"}


async def test_search_passes_the_words_and_shows_them(storefront: httpx.AsyncClient, apis: Any) -> None:
    response = await storefront.get("/search", params={"q": "  mug "})

    assert response.status_code == 200
    assert apis.queries[-1] == {"q": "mug", "page": "1", "limit": "2"}
    assert "<title>Search: mug — microshop</title>" in response.text
    assert "for “mug”" in response.text and "Blue Mug" in response.text and "Green Tea" not in response.text


async def test_search_refused_by_the_api_shows_its_reason(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/search", params={"q": " ".join(["word"] * 11)})

    assert response.status_code == 200
    assert "q: at most 10 words" in response.text and 'role="alert"' in response.text


async def test_partial_results_are_only_the_results(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/catalog", params={"q": "mug", "partial": "1"})

    assert response.status_code == 200
    assert "<html" not in response.text and "Blue Mug" in response.text


async def test_unknown_category_is_a_404_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/catalog", params={"category": "nope"})

    assert response.status_code == 404
    assert "There is no category" in response.text


async def test_bad_query_values_are_html_400_pages_not_500(storefront: httpx.AsyncClient, apis: Any) -> None:
    for params in ({"page": "0"}, {"page": "x"}, {"category": "../etc"}, {"q": "x" * 500}):
        response = await storefront.get("/catalog", params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"].startswith("text/html")
        assert "That page address is not valid" in response.text
    assert apis.queries == []


async def test_unknown_path_is_a_404_page_in_the_shop_layout(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/no/such/page")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert '<a class="brand" href="/">microshop</a>' in response.text


async def test_product_page_has_an_add_to_cart_form(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/products/p-1")

    assert response.status_code == 200
    page = response.text
    assert "<title>Blue Mug — microshop</title>" in page
    assert "A sturdy blue mug." in page and "€12.99" in page and "SKU MUG-1" in page
    assert 'action="/cart/add"' in page and 'name="sku" value="MUG-1"' in page
    assert '<label for="f-quantity">Quantity</label>' in page
    assert "More like this" in page and "Tiny Mug" in page


async def test_a_sold_out_product_cannot_be_added(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/products/p-3")

    assert "Sold out for now" in response.text and 'action="/cart/add"' not in response.text


async def test_a_failing_related_list_does_not_break_the_product_page(storefront: httpx.AsyncClient, apis: Any) -> None:
    apis.fail_related = True
    response = await storefront.get("/products/p-1")

    assert response.status_code == 200
    assert "Blue Mug" in response.text and "More like this" not in response.text


async def test_unknown_product_is_a_404_page(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/products/p-404")

    assert response.status_code == 404
    assert "There is no such product." in response.text


async def test_gateway_down_gives_a_friendly_503_page_fast(make_storefront: StorefrontFactory, dead_url: str) -> None:
    async with make_storefront(gateway_url=dead_url) as storefront:
        started = time.perf_counter()
        pages = [await storefront.get(path) for path in ("/", "/catalog", "/products/p-1")]
        elapsed = time.perf_counter() - started

    for response in pages:
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert "unavailable right now" in response.text
        assert "microshop" in response.text  # the shop's layout, not a bare error
    assert elapsed < 3


async def test_static_files_are_served(storefront: httpx.AsyncClient) -> None:
    css = await storefront.get("/static/shop.css")
    js = await storefront.get("/static/shop.js")

    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ".grid" in css.text
    assert js.status_code == 200 and "data-live-search" in js.text


async def test_pages_answer_head_requests(storefront: httpx.AsyncClient) -> None:
    response = await storefront.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")

"""Full-text search on both dialects: relevance, prefixes, filters, and hostile query strings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from microshop_products.domain import search_terms
from microshop_products.testing import Service, ServiceFactory


@pytest.fixture
async def shop(make_service: ServiceFactory) -> AsyncIterator[Service]:
    async with make_service() as service:  # the demo catalog
        yield service


async def search(shop: Service, q: str, **params: Any) -> list[str]:
    response = await shop.client.get("/api/v1/products", params={"q": q, "limit": 100, **params})
    assert response.status_code == 200, response.text
    return [item["sku"] for item in response.json()["items"]]


@pytest.mark.parametrize(
    ("q", "top"),
    [
        ("espresso", {"COF-003", "KIT-008"}),  # in the name beats in the description (COF-008, BOK-104)
        ("cast iron", {"KIT-003", "TEA-008"}),  # both words in the name beats both in the description
        ("headphone", {"AUD-007"}),  # the whole word beats a prefix of a longer one ("Headphones")
        ("pragmatic programmer", {"BOK-001"}),
        ("matcha", {"TEA-004"}),
    ],
)
async def test_best_matches_come_first(shop: Service, q: str, top: set[str]) -> None:
    found = await search(shop, q)
    assert set(found[: len(top)]) == top, found


async def test_a_name_match_ranks_above_a_description_match(shop: Service) -> None:
    found = await search(shop, "espresso")
    assert set(found) == {"COF-003", "KIT-008", "COF-008", "BOK-104"}
    assert set(found[2:]) == {"COF-008", "BOK-104"}


@pytest.mark.parametrize(("q", "expected"), [("espr", "COF-003"), ("ESPR", "KIT-008"), ("yirga", "COF-001")])
async def test_a_word_beginning_finds_the_word(shop: Service, q: str, expected: str) -> None:
    assert expected in await search(shop, q)


async def test_every_word_must_match(shop: Service) -> None:
    assert await search(shop, "cast iron teapot") == ["TEA-008"]
    assert await search(shop, "espresso walnut") == []


async def test_category_names_are_searched(shop: Service) -> None:
    found = await search(shop, "stationery")
    assert found and all(sku.startswith("STA-") for sku in found)


async def test_search_combines_with_filters_and_other_sorts(shop: Service) -> None:
    assert await search(shop, "espresso", category="kitchen") == ["KIT-008"]
    by_price = await search(shop, "espresso", sort="price")
    response = await shop.client.get("/api/v1/products", params={"q": "espresso", "sort": "price"})
    prices = [item["price"] for item in response.json()["items"]]
    assert prices == sorted(prices) and len(by_price) == 4
    assert response.json()["total"] == 4


async def test_search_sees_catalog_changes(shop: Service) -> None:
    await shop.db.execute("UPDATE products SET name = 'Zanzibar Clove Tea' WHERE sku = 'TEA-001'")
    assert await search(shop, "zanzib") == ["TEA-001"]
    assert "TEA-001" not in await search(shop, "darjeeling")
    await shop.db.execute("UPDATE categories SET name = 'Infusions' WHERE slug = 'tea'")
    assert "TEA-002" in await search(shop, "infusions")
    await shop.db.execute("UPDATE products SET active = 0 WHERE sku = 'TEA-001'")
    assert await search(shop, "zanzibar") == []


@pytest.mark.parametrize(
    "q",
    [
        '"',
        "'",
        "\"espresso' OR 1=1 --",
        "espresso*",
        "NEAR(espresso blend)",
        "name:espresso",
        "espresso AND NOT blend",
        "!(espresso & blend) | x:*",
        "-espresso",
        "^espresso",
        "%_\\",
        "café crème",
        "咖啡",
        "Ünïcödé ßtraße",
        "\x00espresso",
        "🙂 🍵",
        "a" * 200,
        " ".join(["espresso"] * 40)[:200],
        " ".join(f"w{i}" for i in range(60))[:200],
    ],
)
async def test_no_query_string_is_a_server_error(shop: Service, q: str) -> None:
    response = await shop.client.get("/api/v1/products", params={"q": q})
    assert response.status_code in (200, 422), response.text


async def test_operators_are_words_not_syntax(shop: Service) -> None:
    assert set(await search(shop, '"espresso" OR "walnut"')) == set()  # OR is a word no product has
    assert set(await search(shop, "espresso*")) == set(await search(shop, "espresso"))


@pytest.mark.parametrize("q", ["***", "%", "!!! ???", "-- ;", '""'])
async def test_a_query_without_letters_or_digits_finds_nothing(shop: Service, q: str) -> None:
    response = await shop.client.get("/api/v1/products", params={"q": q})
    assert response.status_code == 200
    assert response.json()["items"] == [] and response.json()["total"] == 0


async def test_a_ten_kilobyte_query_is_refused_naming_q(shop: Service) -> None:
    response = await shop.client.get("/api/v1/products", params={"q": "espresso " * 1200})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "q"


def test_search_terms_keep_letters_and_digits_only_and_at_most_ten_words() -> None:
    assert search_terms('"Espresso" OR name:blend*') == ("espresso", "or", "name", "blend")
    assert search_terms("café_crème 2x") == ("café", "crème", "2x")
    assert search_terms("*** --") == ()
    assert len(search_terms(" ".join(f"w{i}" for i in range(50)))) == 10
    assert search_terms("a a A") == ("a",)

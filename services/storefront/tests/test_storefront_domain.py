"""What pages show, without I/O: money, availability, image URLs, pagination."""

from __future__ import annotations

import pytest

from microshop_storefront.domain import Product, ProductPage, format_money, safe_image_url


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1999, "EUR", "€19.99"),
        (5, "usd", "$0.05"),
        (123456789, "GBP", "£1,234,567.89"),
        (500, "JPY", "¥500"),
        (1000, "CHF", "10.00 CHF"),
        (-250, "EUR", "-€2.50"),
    ],
)
def test_format_money_from_minor_units(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


def test_availability_labels() -> None:
    def product(**stock: object) -> Product:
        return Product.model_validate({"id": 1, "name": "x", "price": 1, **stock})

    assert product(available=10).availability == ("in", "In stock")
    assert product(available=3).availability == ("low", "Only 3 left")
    assert product(available=0).availability == ("out", "Out of stock")
    assert product(in_stock=False).availability == ("out", "Out of stock")
    assert product().availability is None
    assert product().id == "1"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("/api/v1/products/p/image.svg", True),
        ("https://cdn.example/x.png", True),
        ("javascript:alert(1)", False),
        ("//evil.example/x.png", False),
        ("data:image/svg+xml,<svg/>", False),
        ("", False),
    ],
)
def test_only_relative_or_http_image_urls_are_used(url: str, kept: bool) -> None:
    assert (safe_image_url(url) == url) is kept


def test_page_count_and_neighbours() -> None:
    page = ProductPage.from_api({"items": [], "page": 2, "limit": 10, "total": 25}, 1, 10)

    assert (page.pages, page.has_previous, page.has_next) == (3, True, True)
    assert ProductPage.from_api({"items": [], "page": 1, "limit": 10, "total": 0}, 1, 10).pages == 1
    with pytest.raises(ValueError, match="items"):
        ProductPage.from_api([], 1, 10)

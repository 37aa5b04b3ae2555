"""Browsing: the home page, the catalog with filters, sort and search, and the product page."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from microshop_storefront.clients import ApiError, NotFound, SourceUnavailable
from microshop_storefront.domain import Category, Product, ProductPage, amount_text, parse_amount
from microshop_storefront.web import ShopDep

router = APIRouter()

SORTS = {
    "relevance": "Best match",
    "name": "Name",
    "price": "Price: low to high",
    "-price": "Price: high to low",
    "newest": "Newest",
}
FEATURED = 8
RELATED = 4

PageQuery = Annotated[int, Query(ge=1, le=10_000)]
CategoryQuery = Annotated[str, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")]
SearchQuery = Annotated[str, Query(max_length=200)]
PriceQuery = Annotated[str, Query(max_length=20)]


async def _categories_or_none(shop: ShopDep) -> list[Category]:
    """The category list, or none when the catalog cannot give it: a page still renders without it."""
    try:
        return await shop.catalog.categories()
    except (SourceUnavailable, ApiError):
        return []


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def home_page(request: Request, shop: ShopDep) -> HTMLResponse:
    try:
        featured, categories = await asyncio.gather(
            shop.catalog.search({"sort": "newest"}, page=1, limit=FEATURED), _categories_or_none(shop)
        )
    except (SourceUnavailable, ApiError):
        return shop.unavailable(request, "The shop")
    return shop.render(request, "home.html", title="Home", featured=featured.items, categories=categories)


@router.api_route("/catalog", methods=["GET", "HEAD"], response_class=HTMLResponse)
@router.api_route("/search", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def catalog_page(
    request: Request,
    shop: ShopDep,
    q: SearchQuery = "",
    category: CategoryQuery = "",
    min_price: PriceQuery = "",
    max_price: PriceQuery = "",
    in_stock: Annotated[str, Query(max_length=5)] = "",
    sort: Annotated[str, Query(max_length=20)] = "",
    page: PageQuery = 1,
    partial: Annotated[str, Query(max_length=1)] = "",
) -> HTMLResponse:
    """The catalog; with ``partial=1`` only the results (the search box swaps them in as you type)."""
    q = q.strip()
    errors: dict[str, str] = {}
    params: dict[str, str | int] = {}
    if q:
        params["q"] = q
    if category:
        params["category"] = category
    for name, raw in (("min_price", min_price), ("max_price", max_price)):
        amount = parse_amount(raw)
        if raw.strip() and amount is None:
            errors[name] = "Enter a price such as 12.50."
        elif amount is not None:
            params[name] = amount
    if "min_price" in params and "max_price" in params and int(params["min_price"]) > int(params["max_price"]):
        errors["max_price"] = "The highest price must be at least the lowest."
        del params["max_price"]
    if in_stock:
        params["in_stock"] = "true"
    if sort in SORTS and (sort != "relevance" or q):
        params["sort"] = sort
    filters = {
        "q": q,
        "category": category,
        "min_price": amount_text(parse_amount(min_price)) if "min_price" not in errors else min_price,
        "max_price": amount_text(parse_amount(max_price)) if "max_price" not in errors else max_price,
        "in_stock": bool(in_stock),
        "sort": params.get("sort", ""),
    }
    try:
        results, categories = await asyncio.gather(
            shop.catalog.search(params, page=page, limit=shop.settings.page_size), _categories_or_none(shop)
        )
    except SourceUnavailable:
        return shop.unavailable(request, "The catalog")
    except NotFound:
        return shop.not_found(request, f"There is no category {category!r}.")
    except ApiError as exc:
        results, categories = ProductPage(items=[], page=1, limit=shop.settings.page_size, total=0), []
        errors["q" if q else "filters"] = exc.detail
    current = next((c for c in categories if c.slug == category), None)
    title = f"Search: {q}" if q else (current.name if current else "All products")
    link_params = {k: v for k, v in filters.items() if v and k != "in_stock"}
    if filters["in_stock"]:
        link_params["in_stock"] = "1"
    context = {
        "title": title,
        "products": results,
        "categories": categories,
        "filters": filters,
        "link_params": link_params,
        "sorts": SORTS,
        "errors": errors,
    }
    if partial:
        return shop.render(request, "_results.html", **context)
    return shop.render(request, "catalog.html", **context)


@router.api_route("/products/{product_id}", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def product_page(
    request: Request, shop: ShopDep, product_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> HTMLResponse:
    try:
        product = await shop.catalog.product(product_id)
    except SourceUnavailable:
        return shop.unavailable(request, "This product")
    except ApiError:
        return shop.not_found(request, "There is no such product.")
    related = await _related(shop, product)
    return shop.render(request, "product.html", title=product.name, product=product, related=related)


async def _related(shop: ShopDep, product: Product) -> list[Product]:
    """More from the product's category; nothing (never an error page) when the catalog cannot say."""
    if not product.category:
        return []
    try:
        page = await shop.catalog.search({"category": product.category}, page=1, limit=RELATED + 1)
    except (SourceUnavailable, ApiError):
        return []
    return [item for item in page.items if item.id != product.id][:RELATED]

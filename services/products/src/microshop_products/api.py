"""HTTP routes of the products service: public catalog reads and the internal inventory calls of the saga."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from microshop_kit.db import Row
from microshop_kit.errors import ProblemError, conflict, invalid, not_found
from microshop_kit.lean import LeanRoute
from microshop_kit.query import parse_query, query_parameters
from microshop_products import domain
from microshop_products.domain import Line, ProductQuery, ReservationStatus, Sort
from microshop_products.handlers import Catalog, Inventory, ProductNotFound
from microshop_products.images import product_svg
from microshop_products.settings import ProductsSettings

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
Sku = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SKU_PATTERN)]
SkuList = Annotated[list[Sku], Query(min_length=1, max_length=100, description="One or more SKUs (repeat sku=)")]
OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=ORDER_ID_PATTERN)]


# Dependencies are async on purpose: FastAPI runs a plain `def` dependency in a worker thread (a hop of
# ~90 us per call on this machine, measured as the largest cost of a catalog read).
async def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


async def _inventory(request: Request) -> Inventory:
    inventory: Inventory = request.app.state.inventory
    return inventory


async def _settings(request: Request) -> ProductsSettings:
    settings: ProductsSettings = request.app.state.kit.settings
    return settings


CatalogDep = Annotated[Catalog, Depends(_catalog)]
InventoryDep = Annotated[Inventory, Depends(_inventory)]
SettingsDep = Annotated[ProductsSettings, Depends(_settings)]

# ------------------------------------------------------------------------------------------------- schemas


class ProductOut(BaseModel):
    id: str
    sku: str
    name: str
    description: str
    category: str = Field(description="Slug of the product's category")
    price: int = Field(description="Minor units of currency (1999 = 19.99)")
    currency: str
    image_url: str
    available: int = Field(description="Units on hand")


class ProductPageOut(BaseModel):
    items: list[ProductOut]
    page: int
    limit: int
    total: int


class CategoryOut(BaseModel):
    id: str
    slug: str
    name: str
    parent: str | None = Field(description="Slug of the parent category")
    product_count: int


class CategoriesOut(BaseModel):
    items: list[CategoryOut]


class AvailabilityOut(BaseModel):
    availability: dict[str, int] = Field(description="Units on hand per known SKU; unknown SKUs are left out")


class InternalProductOut(BaseModel):
    id: str
    sku: str
    name: str
    price: int
    currency: str
    active: bool


class InternalProductsOut(BaseModel):
    items: list[InternalProductOut]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: int = Field(strict=True, gt=0, le=10_000)


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64, pattern=ORDER_ID_PATTERN)
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class LineOut(BaseModel):
    sku: str
    quantity: int


class ReservationOut(BaseModel):
    order_id: str
    status: ReservationStatus
    expires_at: str
    lines: list[LineOut]


class SettledOut(BaseModel):
    order_id: str
    status: ReservationStatus


# ---------------------------------------------------------------------------------------- HTTP caching


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {value.strip().removeprefix("W/") for value in header.split(",")}
    return "*" in candidates or etag in candidates


def cached(request: Request, body: bytes, media_type: str, max_age: int) -> Response:
    """A public, cacheable answer with a strong ETag (hash of the body); 304 when the client has it."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _json(request: Request, model: BaseModel, max_age: int) -> Response:
    return cached(request, model.model_dump_json().encode(), "application/json", max_age)


def _query_invalid(field: str, message: str) -> ProblemError:
    return ProblemError(
        422,
        "Unprocessable Content",
        f"{field}: {message}",
        type_="/problems/validation",
        errors=[{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


# ----------------------------------------------------------------------------------------- public routes

router = APIRouter()


class ProductListQuery(BaseModel):
    """The catalog's filters, sort and page (query string of ``GET /api/v1/products``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    category: str | None = Field(None, max_length=64, description="Category slug")
    min_price: int | None = Field(None, ge=0)
    max_price: int | None = Field(None, ge=0)
    in_stock: bool | None = Field(None, description="true: only in stock; false: only sold out")
    q: str | None = Field(
        None,
        max_length=domain.MAX_SEARCH_CHARS,
        description="Search: words (or word beginnings) of the name, category or description; "
        "only letters and digits count, at most 10 words",
    )
    sort: Sort | None = Field(None, description="Default: relevance with q, name without")
    page: int = Field(1, ge=1, le=10_000)
    limit: int = Field(20, ge=1, le=100)


@router.get(
    "/api/v1/products",
    response_model=ProductPageOut,
    tags=["catalog"],
    openapi_extra=query_parameters(ProductListQuery),
)
async def list_products(request: Request) -> Response:
    """The catalog, filtered, sorted and paged."""
    params = parse_query(request, ProductListQuery)
    if params.min_price is not None and params.max_price is not None and params.min_price > params.max_price:
        raise _query_invalid("max_price", f"must be at least min_price ({params.min_price})")
    search = (params.q or "").strip() or None
    order = params.sort or (Sort.RELEVANCE if search else Sort.NAME)
    query = ProductQuery(
        params.category, params.min_price, params.max_price, params.in_stock, search, order, params.page, params.limit
    )
    catalog: Catalog = request.app.state.catalog
    settings: ProductsSettings = request.app.state.kit.settings
    result = await catalog.products(query)
    # One validation of the whole page (pydantic's compiled validator), not one model per row.
    body = ProductPageOut.model_validate(
        {
            "items": [dict(row) for row in result.items],
            "page": result.page,
            "limit": result.limit,
            "total": result.total,
        }
    )
    return _json(request, body, settings.catalog_max_age_seconds)


@router.get("/api/v1/products/{product_id}", response_model=ProductOut, tags=["catalog"])
async def get_product(request: Request, product_id: str, catalog: CatalogDep, settings: SettingsDep) -> Response:
    row = await _product(catalog, product_id)
    return _json(request, ProductOut.model_validate(dict(row)), settings.catalog_max_age_seconds)


@router.get(
    "/api/v1/products/{product_id}/image.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
    tags=["catalog"],
)
async def product_image(request: Request, product_id: str, catalog: CatalogDep, settings: SettingsDep) -> Response:
    """A picture of the product, drawn by this service (no image host, nothing fetched)."""
    row = await _product(catalog, product_id)
    svg = product_svg(row["name"], row["category"], row["category_name"]).encode()
    response = cached(request, svg, "image/svg+xml", max(settings.catalog_max_age_seconds, 300))
    # An SVG opened directly is a document: allow it no scripts and no fetches.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _product(catalog: Catalog, product_id: str) -> Row:
    try:
        uuid.UUID(product_id)
        return await catalog.product(product_id)
    except (ValueError, ProductNotFound):
        raise not_found("Product", product_id[:64]) from None


@router.get("/api/v1/categories", response_model=CategoriesOut, tags=["catalog"])
async def list_categories(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    rows = await catalog.categories()
    body = CategoriesOut(items=[CategoryOut.model_validate(dict(row)) for row in rows])
    return _json(request, body, settings.catalog_max_age_seconds)


@router.get("/api/v1/availability", response_model=AvailabilityOut, tags=["catalog"])
async def availability(catalog: CatalogDep, sku: SkuList) -> AvailabilityOut:
    return AvailabilityOut(availability=await catalog.availability(sku))


# --------------------------------------------------------------------------------------- internal routes

internal = APIRouter(prefix="/internal/v1", tags=["internal"], route_class=LeanRoute)


@internal.get("/products", response_model=InternalProductsOut)
async def internal_products(catalog: CatalogDep, sku: SkuList) -> InternalProductsOut:
    """Current name, price and state of each SKU (the orders service prices carts and orders with it)."""
    rows = await catalog.by_skus(sku)
    return InternalProductsOut(items=[InternalProductOut.model_validate(dict(row)) for row in rows])


@internal.post("/reservations", status_code=201, response_model=ReservationOut)
async def reserve(body: ReservationIn, inventory: InventoryDep) -> ReservationOut:
    """Reserve all lines or none; the same order id again replays the first answer."""
    lines = [Line(line.sku, line.quantity) for line in body.lines]
    try:
        reservation = await inventory.reserve(body.order_id, lines)
    except domain.InventoryError as exc:
        raise _problem(exc) from exc
    return ReservationOut(
        order_id=reservation.order_id,
        status=reservation.status,
        expires_at=reservation.expires_at,
        lines=[LineOut(sku=line.sku, quantity=line.quantity) for line in reservation.lines],
    )


@internal.post("/reservations/{order_id}/commit", response_model=SettledOut)
async def commit(order_id: OrderId, inventory: InventoryDep) -> SettledOut:
    try:
        return SettledOut(order_id=order_id, status=await inventory.commit(order_id))
    except domain.InventoryError as exc:
        raise _problem(exc) from exc


@internal.post("/reservations/{order_id}/release", response_model=SettledOut)
async def release(order_id: OrderId, inventory: InventoryDep) -> SettledOut:
    try:
        return SettledOut(order_id=order_id, status=await inventory.release(order_id))
    except domain.InventoryError as exc:
        raise _problem(exc) from exc


@internal.post("/reservations/{order_id}/return", response_model=SettledOut)
async def give_back(order_id: OrderId, inventory: InventoryDep) -> SettledOut:
    """A committed (sold) reservation's units go back on hand: a confirmed order cancelled before shipping.
    Idempotent: returning again answers the same."""
    try:
        return SettledOut(order_id=order_id, status=await inventory.give_back(order_id))
    except domain.InventoryError as exc:
        raise _problem(exc) from exc


def _problem(exc: domain.InventoryError) -> ProblemError:
    """The one place inventory refusals become HTTP answers."""
    if isinstance(exc, domain.OutOfStock):
        return ProblemError(409, "Out of stock", str(exc), type_="/problems/out-of-stock", skus=exc.skus)
    if isinstance(exc, domain.ReservationReleased):
        return conflict(str(exc), type_="/problems/reservation-released")
    if isinstance(exc, domain.ReservationCommitted):
        return conflict(str(exc), type_="/problems/reservation-committed")
    if isinstance(exc, domain.ReservationNotCommitted):
        return conflict(str(exc), type_="/problems/reservation-not-committed")
    if isinstance(exc, domain.ReservationNotFound):
        return not_found("Reservation of order", exc.order_id)
    if isinstance(exc, domain.ReservationMismatch):
        problem = invalid("lines", str(exc))
        problem.type_ = "/problems/reservation-mismatch"
        return problem
    return invalid("lines", str(exc))  # DuplicateSku

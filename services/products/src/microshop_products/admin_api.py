"""HTTP routes of catalog administration (role admin): create, change and deactivate products, set stock."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from microshop_kit.app import AdminDep
from microshop_kit.errors import ProblemError, conflict, invalid, not_found
from microshop_products import domain
from microshop_products.api import SKU_PATTERN, CatalogDep, ProductOut, Sku
from microshop_products.handlers import Catalog, CatalogAdmin, ProductNotFound


async def _admin(request: Request) -> CatalogAdmin:
    admin: CatalogAdmin = request.app.state.admin
    return admin


CatalogAdminDep = Annotated[CatalogAdmin, Depends(_admin)]

# ------------------------------------------------------------------------------------------ admin routes

#: Site-relative only ("/images/x.png"): never another host ("//evil", "https://"), so no hot-linking.
SITE_RELATIVE = r"^/([A-Za-z0-9._~!$&'()*+,;=:@%-][A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=5_000)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Price = Annotated[int, Field(strict=True, ge=0, le=100_000_000, description="Minor units")]
ImageUrl = Annotated[str, StringConstraints(max_length=500, pattern=SITE_RELATIVE)]

admin = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    description: Description = ""
    category: Slug
    price: Price
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    image_url: ImageUrl | None = Field(default=None, description="Site-relative; default: the drawn picture")
    active: bool = True
    stock: int = Field(default=0, strict=True, ge=0, le=1_000_000, description="Units received at creation")


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    category: Slug | None = None
    active: bool | None = None
    image_url: ImageUrl | None = None


class AdminProductOut(ProductOut):
    active: bool


class StockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_hand: int = Field(strict=True, ge=0, le=1_000_000, description="Units on hand after this change")


class StockOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    sold: int
    received: int
    low_threshold: int


ProductId = Annotated[str, Path(min_length=1, max_length=64)]


@admin.post("/products", status_code=201, response_model=AdminProductOut)
async def create_product(
    body: ProductIn, response: Response, _: AdminDep, admin_: CatalogAdminDep, catalog: CatalogDep
) -> AdminProductOut:
    try:
        product_id = await admin_.create(domain.NewProduct(**body.model_dump()))
    except domain.CatalogError as exc:
        raise _catalog_problem(exc) from exc
    response.headers["Location"] = f"/api/v1/admin/products/{product_id}"
    return await _admin_product(catalog, product_id)


@admin.get("/products/{product_id}", response_model=AdminProductOut)
async def admin_product(product_id: ProductId, _: AdminDep, catalog: CatalogDep) -> AdminProductOut:
    """A product as admins see it, inactive ones included."""
    return await _admin_product(catalog, product_id)


@admin.patch("/products/{product_id}", response_model=AdminProductOut)
async def update_product(
    product_id: ProductId, body: ProductPatch, _: AdminDep, admin_: CatalogAdminDep, catalog: CatalogDep
) -> AdminProductOut:
    """Change the fields sent; a field sent as null is refused (every field has a value)."""
    changes = body.model_dump(exclude_unset=True)
    nulls = sorted(key for key, value in changes.items() if value is None)
    if nulls:
        raise invalid(nulls[0], "may not be null")
    try:
        await admin_.update(product_id, changes)
    except ProductNotFound:
        raise not_found("Product", product_id) from None
    except domain.CatalogError as exc:
        raise _catalog_problem(exc) from exc
    return await _admin_product(catalog, product_id)


@admin.post("/products/{product_id}/deactivate", response_model=AdminProductOut)
async def deactivate_product(
    product_id: ProductId, _: AdminDep, admin_: CatalogAdminDep, catalog: CatalogDep
) -> AdminProductOut:
    """Take a product off the catalog (kept for orders that name it; PATCH active=true brings it back)."""
    return await update_product(product_id, ProductPatch(active=False), _, admin_, catalog)


@admin.put("/stock/{sku}", response_model=StockOut)
async def set_stock(
    sku: Annotated[str, Path(max_length=64, pattern=SKU_PATTERN)], body: StockIn, _: AdminDep, admin_: CatalogAdminDep
) -> StockOut:
    """Receive or write off units: ``on_hand`` after the change; reserved and sold units are untouched and the
    difference counts as received, so on_hand + reserved + sold == received holds."""
    try:
        row = await admin_.set_stock(sku, body.on_hand)
    except domain.CatalogError as exc:
        raise _catalog_problem(exc) from exc
    return StockOut.model_validate(dict(row))


async def _admin_product(catalog: Catalog, product_id: str) -> AdminProductOut:
    try:
        row = await catalog.any_product(product_id)
    except ProductNotFound:
        raise not_found("Product", product_id) from None
    return AdminProductOut.model_validate({**dict(row), "active": bool(row["active"])})


def _catalog_problem(exc: domain.CatalogError) -> ProblemError:
    if isinstance(exc, domain.SkuTaken):
        return conflict(str(exc), type_="/problems/sku-taken")
    if isinstance(exc, domain.UnknownSku):
        return not_found("Stock of SKU", exc.sku)
    if isinstance(exc, domain.UnknownCategory):
        return invalid("category", str(exc))
    return invalid("body", str(exc))

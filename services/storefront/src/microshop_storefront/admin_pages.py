"""The admin area (accounts with the ``admin`` role): orders, products and stock, dead letters, platform status.

The pages only offer what the admin API allows; every call carries the admin's own token and the services
check the role again, so a page shown by mistake could still change nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from microshop_kit.errors import UpstreamError
from microshop_storefront.clients import ApiError, NotFound, SourceUnavailable
from microshop_storefront.domain import STATUS_LABELS, Order, ProductPage, amount_text, parse_amount, status_name
from microshop_storefront.forms import SKU, value
from microshop_storefront.session import SignInRequired, Visitor
from microshop_storefront.web import FormDep, Shop, ShopDep, VisitorDep, redirect

router = APIRouter(prefix="/admin")

OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ProductId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
TRACKING = re.compile(r"^[A-Za-z0-9-]{3,64}$")
ORDERS_PER_PAGE = 25


def _admin_only(request: Request, shop: Shop, visitor: Visitor) -> HTMLResponse | None:
    if not visitor.signed_in:
        raise SignInRequired
    if not visitor.is_admin:
        return shop.error(request, 403, "Admins only", "This part of the shop is for the shop's admins.")
    return None


async def _call(shop: Shop, visitor: Visitor, method: str, path: str, **kwargs: Any) -> Any:
    return await shop.as_customer(visitor, lambda token: shop.admin.call(method, path, token=token, **kwargs))


@router.get("", response_class=HTMLResponse)
async def admin_home(request: Request, shop: ShopDep, visitor: VisitorDep) -> Response:
    return _admin_only(request, shop, visitor) or shop.render(request, "admin/home.html", title="Admin")


# ------------------------------------------------------------------------------------------------- orders


@router.get("/orders", response_class=HTMLResponse)
async def admin_orders(
    request: Request,
    shop: ShopDep,
    visitor: VisitorDep,
    id: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """The latest orders of every customer (one status, when chosen), or one order found by its id (from the
    list, the customer, the confirmation email or the mailbox) to move on."""
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    if status and status not in STATUS_LABELS:
        return shop.error(request, 400, "There is no such order status", "Choose a status from the list.")
    order_id = id.strip()
    order, latest = None, None
    try:
        order = await _find(shop, visitor, order_id) if order_id else None
        if order is None:
            latest = await shop.as_customer(
                visitor,
                lambda token: shop.orders.all_orders(token, status=status or None, page=page, limit=ORDERS_PER_PAGE),
            )
    except SourceUnavailable:
        return shop.unavailable(request, "The orders service")
    except ApiError as exc:
        heading = "The order cannot be shown" if order_id else "The orders cannot be listed"
        return shop.error(request, exc.status, heading, exc.detail)
    return shop.render(
        request,
        "admin/orders.html",
        title="Admin: orders",
        order=order,
        order_id=order_id,
        lookup_error="There is no order with that id." if order_id and order is None else None,
        latest=latest,
        chosen=status,
        statuses=[(code, status_name(code)) for code in STATUS_LABELS],
        status_name=status_name,
    )


async def _find(shop: Shop, visitor: Visitor, order_id: str) -> Order | None:
    """The order with this id; None when there is none (the API answers an unknown or malformed id 404 or 422).
    Any other refusal (a 403 for an account no longer admin, say) is raised: it is not "no such order"."""
    try:
        return await shop.as_customer(visitor, lambda token: shop.orders.order(token, order_id))
    except ApiError as exc:
        if exc.status in (404, 422):
            return None
        raise


@router.post("/orders/{order_id}/ship", response_class=HTMLResponse)
async def ship(request: Request, shop: ShopDep, visitor: VisitorDep, order_id: OrderId, form: FormDep) -> Response:
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    carrier, tracking = value(form, "carrier", 50), value(form, "tracking_number", 64)
    if not carrier or not TRACKING.fullmatch(tracking):
        message = "Enter the carrier and a tracking number (3-64 letters, digits or hyphens)."
        return shop.error(request, 422, "The shipment needs a carrier and a tracking number", message)
    body = {"carrier": carrier, "tracking_number": tracking}
    return await _move(request, shop, visitor, order_id, "ship", body, "shipped")


@router.post("/orders/{order_id}/deliver", response_class=HTMLResponse)
async def deliver(request: Request, shop: ShopDep, visitor: VisitorDep, order_id: OrderId, _: FormDep) -> Response:
    return _admin_only(request, shop, visitor) or await _move(
        request, shop, visitor, order_id, "deliver", None, "delivered"
    )


async def _move(
    request: Request, shop: Shop, visitor: Visitor, order_id: str, step: str, body: Any, notice: str
) -> Response:
    try:
        await _call(shop, visitor, "POST", f"/api/v1/admin/orders/{quote(order_id, safe='')}/{step}", json=body)
    except NotFound:
        return shop.not_found(request, "There is no such order.")
    except ApiError as exc:
        return shop.error(request, exc.status, "The order cannot move on", exc.detail)
    return redirect("/admin/orders", notice, id=order_id)


# ---------------------------------------------------------------------------------------- products, stock


@router.get("/products", response_class=HTMLResponse)
async def admin_products(
    request: Request,
    shop: ShopDep,
    visitor: VisitorDep,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    params: dict[str, str | int] = {"q": q.strip()} if q.strip() else {"sort": "name"}
    try:
        products: ProductPage = await shop.catalog.search(params, page=page, limit=25)
    except SourceUnavailable:
        return shop.unavailable(request, "The catalog")
    except ApiError as exc:
        return shop.error(request, 400, "That search is not possible", exc.detail)
    return shop.render(
        request, "admin/products.html", title="Admin: products", products=products, q=q, amount_text=amount_text
    )


@router.post("/stock/{sku}", response_class=HTMLResponse)
async def set_stock(request: Request, shop: ShopDep, visitor: VisitorDep, sku: Sku, form: FormDep) -> Response:
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    raw = value(form, "on_hand", 7)
    if not raw.isdigit() or not SKU.fullmatch(sku):
        return shop.error(request, 422, "Stock must be a whole number", "Enter the units on hand, 0 or more.")
    try:
        await _call(shop, visitor, "PUT", f"/api/v1/admin/stock/{quote(sku, safe='')}", json={"on_hand": int(raw)})
    except ApiError as exc:
        return shop.error(request, exc.status, "The stock was not changed", exc.detail)
    return redirect("/admin/products", "stock-saved")


@router.post("/products/{product_id}/price", response_class=HTMLResponse)
async def set_price(
    request: Request, shop: ShopDep, visitor: VisitorDep, product_id: ProductId, form: FormDep
) -> Response:
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    price = parse_amount(value(form, "price", 20))
    if price is None or price <= 0:
        return shop.error(request, 422, "That is not a price", "Enter a price such as 12.50.")
    try:
        await _call(
            shop, visitor, "PATCH", f"/api/v1/admin/products/{quote(product_id, safe='')}", json={"price": price}
        )
    except ApiError as exc:
        return shop.error(request, exc.status, "The price was not changed", exc.detail)
    return redirect("/admin/products", "product-saved")


# ---------------------------------------------------------------------------------- notifications, status


@router.get("/notifications", response_class=HTMLResponse)
async def dead_letters(request: Request, shop: ShopDep, visitor: VisitorDep) -> Response:
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    try:
        body = await _call(shop, visitor, "GET", "/api/v1/notifications/dead-letters", params={"limit": 100})
    except SourceUnavailable:
        return shop.unavailable(request, "The notifications service")
    messages = body.get("messages", []) if isinstance(body, dict) else []
    events = body.get("events", []) if isinstance(body, dict) else []
    return shop.render(
        request, "admin/notifications.html", title="Admin: dead letters", messages=messages, events=events
    )


@router.get("/status", response_class=HTMLResponse)
async def status(request: Request, shop: ShopDep, visitor: VisitorDep) -> Response:
    """Each service's readiness as the gateway sees it (its ``/readyz``), and the storefront's own circuits."""
    refused = _admin_only(request, shop, visitor)
    if refused:
        return refused
    checks: dict[str, str] = {}
    try:
        answer = await shop.status.client.get("/readyz")  # 503 still lists each check
        body = answer.json()
        if isinstance(body, dict) and isinstance(body.get("checks"), dict):
            checks = {str(name): str(state) for name, state in body["checks"].items()}
    except UpstreamError:
        checks = {"gateway": "unavailable: no answer"}
    circuits = {
        name: client.api.client.breaker.state if client.api.client.breaker else "none"
        for name, client in (
            ("catalog", shop.catalog),
            ("accounts", shop.accounts),
            ("orders", shop.orders),
            ("payments", shop.payments),
        )
    }
    return shop.render(request, "admin/status.html", title="Admin: status", checks=checks, circuits=circuits)

"""Orders' HTTP API: cart and orders, with domain errors mapped to problem+json."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from microshop_kit.app import PROBLEM_JSON, AdminDep, PrincipalDep
from microshop_kit.errors import ProblemError, invalid, not_found
from microshop_kit.lean import LeanRoute
from microshop_orders import domain
from microshop_orders.domain import Status
from microshop_orders.handlers import KeyInFlight, KeyReused, Orders, PaymentsUnavailable

# Lean routes (microshop_kit.lean): the cart and the order are the two requests of every checkout.
router = APIRouter(route_class=LeanRoute)
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
SKU = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CartLineIn(Strict):
    sku: SKU
    quantity: int = Field(ge=1, le=99)


class CartIn(Strict):
    lines: list[CartLineIn] = Field(max_length=50)


class CartLineOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: int
    currency: str
    line_total: int
    available: bool
    price_changed: bool
    previous_price: int | None


class CartOut(BaseModel):
    lines: list[CartLineOut]
    total: int
    currency: str | None


class AddressIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$")


class OrderIn(Strict):
    shipping_address: AddressIn
    payment_method_id: str = Field(min_length=3, max_length=64, pattern=r"^pm_[A-Za-z0-9_-]+$")


class OrderLineOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: int
    currency: str
    line_total: int


class TimelineEntry(BaseModel):
    at: str
    status: str
    note: str | None


class Shipment(BaseModel):
    carrier: str
    tracking_number: str


class OrderOut(BaseModel):
    id: str
    status: str
    reason: str | None
    #: While AWAITING_PAYMENT: what the customer must do (``{"type": "redirect_to_url", "url": ...}``).
    next_action: dict[str, Any] | None
    action_deadline: str | None
    cancellation_pending: bool
    refunded: int
    shipment: Shipment | None
    lines: list[OrderLineOut]
    total: int
    currency: str
    shipping_address: dict[str, str | None]
    payment_method_id: str
    created_at: str
    updated_at: str
    timeline: list[TimelineEntry]


class ShipIn(Strict):
    carrier: str = Field(min_length=1, max_length=50)
    tracking_number: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


class OrderPage(BaseModel):
    items: list[OrderOut]
    page: int
    limit: int
    total: int


class AdminOrderOut(BaseModel):
    """An order in the admin's list; ``GET /api/v1/orders/{id}`` (with an admin token) has all of it."""

    id: str
    user_id: str
    status: Status
    cancellation_pending: bool
    total: int = Field(description="Minor units")
    currency: str
    line_count: int
    created_at: str
    updated_at: str


class AdminOrderPage(BaseModel):
    items: list[AdminOrderOut]
    page: int
    limit: int
    total: int


#: The same bounds as the customer's own list: at most 100 orders a page, and no deeper than page 10,000.
Page = Annotated[int, Query(ge=1, le=10_000)]
Limit = Annotated[int, Query(ge=1, le=100, description="Orders per page (at most 100)")]


async def get_orders(request: Request) -> Orders:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop that costs more than the lookup.
    orders: Orders = request.app.state.orders
    return orders


OrdersDep = Annotated[Orders, Depends(get_orders)]


def _domain_problem(exc: domain.OrderError) -> ProblemError:
    if isinstance(exc, domain.PricesChanged):
        changes = [{"sku": c.sku, "old_price": c.old_price, "new_price": c.new_price} for c in exc.changes]
        return ProblemError(409, "Prices Changed", str(exc), type_="/problems/price-changed", changes=changes)
    if isinstance(exc, domain.UnknownProducts):
        return ProblemError(
            422,
            "Unprocessable Content",
            str(exc),
            type_="/problems/unknown-products",
            skus=exc.skus,
            errors=[{"loc": ["body", "lines"], "msg": str(exc), "type": "unknown_product"}],
        )
    if isinstance(exc, domain.OrderStateError):
        return ProblemError(409, "Conflict", str(exc), type_="/problems/order-state")
    if isinstance(exc, domain.EmptyCart):
        return ProblemError(422, "Unprocessable Content", str(exc), type_="/problems/empty-cart")
    return ProblemError(422, "Unprocessable Content", str(exc), type_="/problems/order-rule")


@router.get("/api/v1/cart", response_model=CartOut)
async def read_cart(principal: PrincipalDep, orders: OrdersDep) -> dict[str, Any]:
    return await orders.cart(principal.user_id)


@router.put("/api/v1/cart", response_model=CartOut)
async def put_cart(body: CartIn, principal: PrincipalDep, orders: OrdersDep) -> dict[str, Any]:
    skus = [line.sku for line in body.lines]
    if len(set(skus)) != len(skus):
        raise invalid("lines", "each SKU may appear once; set its quantity instead")
    try:
        return await orders.replace_cart(principal.user_id, [(line.sku, line.quantity) for line in body.lines])
    except domain.OrderError as exc:
        raise _domain_problem(exc) from exc


@router.delete("/api/v1/cart", status_code=204)
async def delete_cart(principal: PrincipalDep, orders: OrdersDep) -> Response:
    await orders.clear_cart(principal.user_id)
    return Response(status_code=204)


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post(
    "/api/v1/orders",
    response_model=OrderOut,
    status_code=201,
    responses={202: {"model": OrderOut, "description": "Still processing: poll the Location"}},
)
async def place_order(
    body: OrderIn, principal: PrincipalDep, orders: OrdersDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    if not idempotency_key or len(idempotency_key) > 255:
        raise ProblemError(
            400,
            "Bad Request",
            "The Idempotency-Key header is required (1 to 255 characters).",
            type_="/problems/idempotency-key-required",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "required, 1 to 255 characters", "type": "missing"}],
        )
    request_hash = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    try:
        status, view = await orders.place(
            user_id=principal.user_id,
            key=idempotency_key,
            request_hash=request_hash,
            address=body.shipping_address.model_dump(exclude_none=True),
            payment_method_id=body.payment_method_id,
        )
    except KeyReused as exc:
        raise ProblemError(
            422,
            "Unprocessable Content",
            "This Idempotency-Key was used with a different request.",
            type_="/problems/idempotency-key-reused",
        ) from exc
    except KeyInFlight as exc:
        raise ProblemError(
            409,
            "Conflict",
            "A request with this Idempotency-Key is still being processed.",
            type_="/problems/idempotency-key-in-flight",
            headers={"Retry-After": "1"},
        ) from exc
    except PaymentsUnavailable as exc:
        raise ProblemError(
            503,
            "Service Unavailable",
            "Payments are unavailable right now (circuit open), so no order was taken and nothing was charged. "
            "Please try again shortly.",
            type_="/problems/payments-unavailable",
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        ) from exc
    except domain.OrderError as exc:
        raise _domain_problem(exc) from exc
    headers = {"Location": f"/api/v1/orders/{view['id']}"}
    return JSONResponse(OrderOut.model_validate(view).model_dump(mode="json"), status_code=status, headers=headers)


@router.get("/api/v1/orders", response_model=OrderPage)
async def list_orders(
    principal: PrincipalDep,
    orders: OrdersDep,
    page: Page = 1,
    limit: Limit = 20,
) -> dict[str, Any]:
    return await orders.list_for(principal.user_id, page=page, limit=limit)


@router.get("/api/v1/orders/{order_id}", response_model=OrderOut)
async def read_order(order_id: str, principal: PrincipalDep, orders: OrdersDep) -> dict[str, Any]:
    # Another customer's order is reported as missing, so ids cannot be probed.
    view = await orders.view(order_id, user_id=None if principal.is_admin else principal.user_id)
    if view is None:
        raise not_found("Order", order_id)
    return view


@router.post("/api/v1/orders/{order_id}/cancel", response_model=OrderOut)
async def cancel_order(order_id: str, principal: PrincipalDep, orders: OrdersDep) -> JSONResponse:
    """Cancel before shipping: the payment is refunded (or its pending approval cancelled) and the stock returned.
    200 once CANCELLED; 202 while the refund or the restock is still under way (poll the order)."""
    try:
        view = await orders.cancel(order_id, user_id=principal.user_id)
    except domain.OrderError as exc:
        raise _domain_problem(exc) from exc
    if view is None:
        raise not_found("Order", order_id)
    status = 200 if view["status"] == Status.CANCELLED else 202
    body = OrderOut.model_validate(view).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers={"Location": f"/api/v1/orders/{order_id}"})


@router.get(
    "/api/v1/admin/orders", response_model=AdminOrderPage, responses={401: _PROBLEM, 403: _PROBLEM, 422: _PROBLEM}
)
async def admin_list_orders(
    _admin: AdminDep,
    orders: OrdersDep,
    status: Annotated[Status | None, Query(description="Only orders in this status")] = None,
    page: Page = 1,
    limit: Limit = 20,
) -> dict[str, Any]:
    """Admin: every customer's orders, newest first, optionally in one status only."""
    return await orders.list_all(status=status, page=page, limit=limit)


@router.post("/api/v1/admin/orders/{order_id}/ship", response_model=OrderOut)
async def ship_order(order_id: str, body: ShipIn, _admin: AdminDep, orders: OrdersDep) -> dict[str, Any]:
    """Admin: a CONFIRMED order leaves the warehouse (publishes ``order.shipped.v1``)."""
    return await _mark(orders, order_id, Status.SHIPPED, carrier=body.carrier, tracking_number=body.tracking_number)


@router.post("/api/v1/admin/orders/{order_id}/deliver", response_model=OrderOut)
async def deliver_order(order_id: str, _admin: AdminDep, orders: OrdersDep) -> dict[str, Any]:
    """Admin: a SHIPPED order reached the customer (publishes ``order.delivered.v1``)."""
    return await _mark(orders, order_id, Status.DELIVERED)


async def _mark(orders: Orders, order_id: str, to: Status, **fields: str) -> dict[str, Any]:
    try:
        view = await orders.mark(order_id, to, **fields)
    except domain.OrderError as exc:
        raise _domain_problem(exc) from exc
    if view is None:
        raise not_found("Order", order_id)
    return view

"""After the checkout: the payment approval step, order history, an order with its timeline, cancelling."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from microshop_storefront.clients import ApiError, NotFound, SourceUnavailable
from microshop_storefront.domain import Order
from microshop_storefront.forms import value
from microshop_storefront.session import SignInRequired
from microshop_storefront.web import FormDep, Shop, ShopDep, VisitorDep, redirect

router = APIRouter()

OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
PaymentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ORDERS_PER_PAGE = 10
SETTLE_POLL = 0.2


@router.get("/orders", response_class=HTMLResponse)
async def orders_page(
    request: Request, shop: ShopDep, visitor: VisitorDep, page: Annotated[int, Query(ge=1, le=10_000)] = 1
) -> HTMLResponse:
    try:
        orders = await shop.as_customer(
            visitor, lambda token: shop.orders.orders(token, page=page, limit=ORDERS_PER_PAGE)
        )
    except SourceUnavailable:
        return shop.unavailable(request, "Your orders")
    return shop.render(request, "orders.html", title="Your orders", orders=orders)


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(
    request: Request,
    shop: ShopDep,
    visitor: VisitorDep,
    order_id: OrderId,
    placed: Annotated[str, Query(max_length=1)] = "",
) -> HTMLResponse:
    try:
        order = await shop.as_customer(visitor, lambda token: shop.orders.order(token, order_id))
    except SourceUnavailable:
        return shop.unavailable(request, "This order")
    except ApiError:
        return shop.not_found(request, "There is no such order in your account.")
    title = f"Order {order.short_id}"
    return shop.render(request, "order.html", title=title, order=order, placed=bool(placed))


@router.post("/orders/{order_id}/cancel")
async def cancel_order(request: Request, shop: ShopDep, visitor: VisitorDep, order_id: OrderId, _: FormDep) -> Response:
    try:
        order = await shop.as_customer(visitor, lambda token: shop.orders.cancel(token, order_id))
    except NotFound:
        return shop.not_found(request, "There is no such order in your account.")
    except ApiError:
        return redirect(f"/orders/{order_id}", "cannot-cancel")
    return redirect(f"/orders/{order_id}", "cancel-pending" if order.cancellation_pending else "cancelled")


# ---------------------------------------------------------------------------------- the approve/deny step


@router.get("/pay/{payment_id}", response_class=HTMLResponse)
async def payment_page(request: Request, shop: ShopDep, visitor: VisitorDep, payment_id: PaymentId) -> Response:
    """The simulated bank's 3-D Secure (or PayPal's) page: the customer approves or denies the payment."""
    if not visitor.signed_in:
        return redirect("/signin", "session-expired", next=f"/pay/{payment_id}")
    try:
        payment = await shop.as_customer(visitor, lambda token: shop.payments.payment(token, payment_id))
    except SourceUnavailable:
        return shop.unavailable(request, "The payment page")
    except ApiError:
        return shop.not_found(request, "There is no such payment waiting for you.")
    if payment.status != "requires_action":
        return redirect(f"/orders/{payment.order_id}")
    paypal = payment.method.get("type") == "paypal"
    title = "Approve with PayPal" if paypal else "Confirm your payment"
    return shop.render(request, "pay.html", title=title, payment=payment, paypal=paypal)


@router.post("/pay/{payment_id}")
async def decide_payment(
    request: Request, shop: ShopDep, visitor: VisitorDep, payment_id: PaymentId, form: FormDep
) -> Response:
    decision = value(form, "decision", 10)
    if decision not in ("approve", "deny"):
        return shop.error(request, 400, "Choose approve or deny", "The payment needs your answer.")
    if not visitor.signed_in:
        raise SignInRequired
    try:
        payment = await shop.as_customer(visitor, lambda token: shop.payments.decide(token, payment_id, decision))
    except SourceUnavailable:
        return shop.unavailable(request, "The payment page")
    except NotFound:
        return shop.not_found(request, "There is no such payment waiting for you.")
    except ApiError as exc:
        order_id = exc.problem.get("order_id")
        if isinstance(order_id, str):
            return redirect(f"/orders/{order_id}")
        return shop.error(request, 409, "This payment is already settled", exc.detail)
    order = await _settled(shop, visitor, payment.order_id)
    confirmed = order is not None and order.status == "CONFIRMED"
    return redirect(f"/orders/{payment.order_id}", **({"placed": "1"} if confirmed else {}))


async def _settled(shop: Shop, visitor: VisitorDep, order_id: str) -> Order | None:
    """The order once the payment's outcome reached it (or as it is after ``settle_wait``)."""
    deadline = time.monotonic() + shop.settings.settle_wait
    order: Order | None = None
    while True:
        try:
            order = await shop.as_customer(visitor, lambda token: shop.orders.order(token, order_id))
        except (SourceUnavailable, ApiError):
            return order
        if order.status not in ("PENDING", "AWAITING_PAYMENT") or time.monotonic() >= deadline:
            return order
        await asyncio.sleep(SETTLE_POLL)

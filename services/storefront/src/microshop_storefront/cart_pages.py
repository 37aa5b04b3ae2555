"""The cart (a guest's in a cookie, a customer's in the orders API) and the checkout."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from microshop_storefront.clients import ApiError, SourceUnavailable
from microshop_storefront.domain import (
    MAX_CART_LINES,
    MAX_QUANTITY,
    TEST_CARDS,
    Address,
    Cart,
    CartLine,
    Order,
    format_money,
    merged_quantities,
)
from microshop_storefront.forms import COUNTRIES, PAYMENT_FIELDS, SKU, AddressForm, PaymentForm, quantity, value
from microshop_storefront.session import SignInRequired, Visitor
from microshop_storefront.web import FormDep, Shop, ShopDep, VisitorDep, redirect

router = APIRouter()


# ------------------------------------------------------------------------------------------------ the cart


async def guest_cart(shop: Shop, visitor: Visitor) -> Cart:
    """A guest's cart priced from the catalog now (lines whose product is gone are dropped)."""
    ids = [pid for pid, _ in visitor.guest_cart.values()]
    products = await shop.catalog.products(ids)
    lines = []
    for sku, (pid, qty) in visitor.guest_cart.items():
        product = products.get(pid)
        if product is None:
            continue
        lines.append(
            CartLine(
                sku=sku,
                name=product.name,
                quantity=qty,
                unit_price=product.price,
                currency=product.currency,
                line_total=product.price * qty,
                available=product.available is None or product.available >= qty,
                product_id=pid,
            )
        )
    currency = lines[0].currency if lines else None
    return Cart(lines=lines, total=sum(line.line_total for line in lines), currency=currency)


async def merge_guest_cart(shop: Shop, visitor: Visitor) -> None:
    """Move a guest's cart into the signed-in customer's cart; kept in its cookie if the API cannot take it."""
    if not visitor.guest_cart or not visitor.signed_in:
        return
    try:
        cart = await shop.as_customer(visitor, shop.orders.cart)
        quantities = cart.quantities()
        for sku, (_, qty) in visitor.guest_cart.items():
            quantities = merged_quantities(quantities, sku, qty)
        await shop.as_customer(visitor, lambda token: shop.orders.replace_cart(token, quantities))
    except (SourceUnavailable, ApiError):
        return
    visitor.guest_cart = {}
    visitor.save_guest_cart()


async def _customer_cart(shop: Shop, visitor: Visitor) -> Cart:
    await merge_guest_cart(shop, visitor)
    return await shop.as_customer(visitor, shop.orders.cart)


@router.get("/cart", response_class=HTMLResponse)
async def cart_page(request: Request, shop: ShopDep, visitor: VisitorDep) -> HTMLResponse:
    try:
        cart = await (_customer_cart(shop, visitor) if visitor.signed_in else guest_cart(shop, visitor))
    except SourceUnavailable:
        return shop.unavailable(request, "Your cart")
    return shop.render(request, "cart.html", title="Your cart", cart=cart)


async def _set_quantity(shop: Shop, visitor: Visitor, sku: str, qty: int, product_id: str | None = None) -> None:
    """Set one line of the cart (0 removes it), in the API for a customer, in the cookie for a guest."""
    if visitor.signed_in:
        cart = await _customer_cart(shop, visitor)
        quantities = cart.quantities()
        quantities[sku] = qty
        await shop.as_customer(visitor, lambda token: shop.orders.replace_cart(token, quantities))
        return
    if qty <= 0:
        visitor.guest_cart.pop(sku, None)
    else:
        pid = product_id or visitor.guest_cart.get(sku, ("", 0))[0]
        if pid:
            visitor.guest_cart[sku] = (pid, qty)
    visitor.save_guest_cart()


@router.post("/cart/add")
async def add_to_cart(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    sku, product_id = value(form, "sku", 64), value(form, "product_id", 64)
    qty = quantity(value(form, "quantity", 3), low=1, high=MAX_QUANTITY)
    if not SKU.fullmatch(sku) or not product_id or qty is None:
        return shop.error(request, 400, "That cannot go in the cart", "Choose a quantity from 1 to 99.")
    if visitor.signed_in:
        current = (await _customer_cart(shop, visitor)).quantities()
    else:
        current = {s: q for s, (_, q) in visitor.guest_cart.items()}
    if sku not in current and len(current) >= MAX_CART_LINES:
        return shop.error(request, 400, "Your cart is full", f"A cart holds at most {MAX_CART_LINES} products.")
    wanted = merged_quantities(current, sku, qty)[sku]
    try:
        await _set_quantity(shop, visitor, sku, wanted, product_id)
    except ApiError as exc:
        return shop.error(request, 400, "That cannot go in the cart", exc.detail)
    return redirect("/cart", "quantity-capped" if current.get(sku, 0) + qty > MAX_QUANTITY else "added")


@router.post("/cart/update")
async def update_cart(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    sku = value(form, "sku", 64)
    removing = value(form, "action", 10) == "remove"
    qty = 0 if removing else quantity(value(form, "quantity", 3), low=0, high=MAX_QUANTITY)
    if not SKU.fullmatch(sku) or qty is None:
        return shop.error(request, 400, "That quantity is not possible", "Choose a quantity from 0 to 99.")
    await _set_quantity(shop, visitor, sku, qty)
    return redirect("/cart", "removed" if qty == 0 else "cart-updated")


# ------------------------------------------------------------------------------------------------ checkout


MONTHS = [(str(month), f"{month:02d}") for month in range(1, 13)]


def _years() -> list[tuple[str, str]]:
    this_year = date.today().year
    return [(str(year), str(year)) for year in range(this_year, this_year + 16)]


async def _checkout_context(shop: Shop, visitor: Visitor) -> dict[str, Any]:
    cart = await _customer_cart(shop, visitor)
    try:
        addresses = await shop.as_customer(visitor, shop.accounts.addresses)
    except (SourceUnavailable, ApiError):
        addresses = []  # the customer types an address instead
    return {
        "title": "Checkout",
        "cart": cart,
        "addresses": addresses,
        "countries": COUNTRIES,
        "months": MONTHS,
        "years_options": _years(),
        "test_cards": TEST_CARDS,
        "attempt": uuid.uuid4().hex,
    }


@router.get("/checkout", response_class=HTMLResponse)
async def checkout_page(request: Request, shop: ShopDep, visitor: VisitorDep) -> Response:
    if not visitor.signed_in:
        return redirect("/signin", "session-expired", next="/checkout")
    try:
        context = await _checkout_context(shop, visitor)
    except SourceUnavailable:
        return shop.unavailable(request, "The checkout")
    if not context["cart"].lines:
        return redirect("/cart", "empty-cart")
    default = next((a for a in context["addresses"] if a.is_default), None)
    values = {"address_id": default.id if default else "new", "method": "card", "country": "GB"}
    return shop.render(request, "checkout.html", values=values, **context)


@router.post("/checkout", response_class=HTMLResponse)
async def place_order(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    if not visitor.signed_in:
        raise SignInRequired
    attempt = value(form, "attempt", 32)
    if not attempt.isalnum() or len(attempt) != 32:
        attempt = uuid.uuid4().hex
    address_id = value(form, "address_id", 64) or "new"
    address = AddressForm.read(form) if address_id == "new" else None
    payment = PaymentForm.read(form)
    values = {
        **(address.values if address else {}),
        "address_id": address_id,
        "method": payment.method,
        "save_address": bool(value(form, "save_address", 1)),
        "paypal_email": payment.paypal_email,
        "exp_month": payment.exp_month,
        "exp_year": payment.exp_year,
    }
    errors = {**(address.errors if address else {}), **payment.errors}
    if errors:
        return await _checkout_again(request, shop, visitor, values, errors, 422)
    try:
        shipping = await _shipping_address(shop, visitor, address_id, address, values["save_address"])
        method_id = await shop.as_customer(
            visitor, lambda token: shop.payments.add_method(token, payment.body, f"pm-{attempt}")
        )
        order = await shop.as_customer(visitor, lambda token: _place(shop, token, shipping, method_id, attempt))
    except _FieldProblem as problem:
        return await _checkout_again(request, shop, visitor, values, problem.errors, 422)
    except ApiError as exc:
        return await _refused(request, shop, visitor, values, exc)
    except SourceUnavailable:
        message = "We could not reach the payment service. Nothing was charged; please try again in a moment."
        return await _checkout_again(request, shop, visitor, values, {"payment": message}, 503)
    return _after_placing(order) or await _checkout_again(
        request, shop, visitor, values, {"payment": order.reason or "Your payment did not go through."}, 402
    )


class _FieldProblem(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


async def _shipping_address(
    shop: Shop, visitor: Visitor, address_id: str, address: AddressForm | None, save: bool
) -> dict[str, str]:
    if address is None:
        saved = await shop.as_customer(visitor, shop.accounts.addresses)
        chosen: Address | None = next((a for a in saved if a.id == address_id), None)
        if chosen is None:
            raise _FieldProblem({"address_id": "That address is no longer in your account; choose another."})
        return chosen.shipping()
    if save:
        try:
            await shop.as_customer(visitor, lambda token: shop.accounts.add_address(token, address.body()))
        except ApiError as exc:
            raise _FieldProblem(exc.field_errors() or {"address": exc.detail}) from exc
    return address.body()


async def _place(shop: Shop, token: str, shipping: dict[str, str], method_id: str, attempt: str) -> Order:
    body = {"shipping_address": shipping, "payment_method_id": method_id}
    answer = await shop.orders.api.call(
        "POST",
        "/api/v1/orders",
        token=token,
        json=body,
        headers={"Idempotency-Key": f"order-{attempt}"},
        timeout=shop.settings.checkout_timeout,
    )
    return Order.model_validate(answer)


def _after_placing(order: Order) -> RedirectResponse | None:
    """Where the browser goes once the order is placed; None when it was rejected (the form shows why)."""
    if order.status == "REJECTED":
        return None
    if order.payment_url:
        return RedirectResponse(order.payment_url, status_code=303)
    return redirect(f"/orders/{order.id}", placed="1")


async def _refused(request: Request, shop: Shop, visitor: Visitor, values: dict[str, Any], exc: ApiError) -> Response:
    """A refusal from the payments or orders API, as messages next to the fields it concerns."""
    if exc.type == "/problems/empty-cart":
        return redirect("/cart", "empty-cart")
    if exc.type == "/problems/price-changed":
        changes = [c for c in exc.problem.get("changes") or [] if isinstance(c, dict)]
        cart = await _customer_cart(shop, visitor)
        names = {line.sku: line for line in cart.lines}
        parts = []
        for change in changes:
            line = names.get(str(change.get("sku")))
            currency = line.currency if line else "EUR"
            old, new = int(change.get("old_price") or 0), int(change.get("new_price") or 0)
            name = line.name if line else str(change.get("sku"))
            parts.append(f"{name} is now {format_money(new, currency)} (was {format_money(old, currency)})")
        message = "Prices changed since you added them: " + "; ".join(parts) + ". Check the total and place the order."
        return await _checkout_again(request, shop, visitor, values, {"cart": message}, 409)
    fields = exc.field_errors("shipping_address.") or {
        PAYMENT_FIELDS[path]: message for path, message in exc.field_errors().items() if path in PAYMENT_FIELDS
    }
    if exc.type == "/problems/idempotency-key-in-flight":
        fields = {"payment": "Your order is already being placed. Check your orders in a moment."}
    return await _checkout_again(request, shop, visitor, values, fields or {"payment": exc.detail}, exc.status)


async def _checkout_again(
    request: Request, shop: Shop, visitor: Visitor, values: dict[str, Any], errors: dict[str, str], status: int
) -> Response:
    try:
        context = await _checkout_context(shop, visitor)
    except SourceUnavailable:
        return shop.unavailable(request, "The checkout")
    return shop.render(request, "checkout.html", status, values=values, errors=errors, **context)

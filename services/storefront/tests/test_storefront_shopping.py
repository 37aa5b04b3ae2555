"""Cart, checkout and the payment approval step, over a real HTTP stand-in of the gateway's API."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import csrf_of, order_body, signed_in

CHECKOUT = {
    "address_id": "new",
    "name": "Ada Buyer",
    "line1": "1 Analytical Way",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "GB",
    "method": "card",
    "card_number": "4242 4242 4242 4242",
    "exp_month": "12",
    "exp_year": "2034",
    "cvc": "123",
}


async def add(storefront: httpx.AsyncClient, sku: str = "MUG-1", product_id: str = "p-1", qty: str = "1") -> Any:
    token = csrf_of((await storefront.get(f"/products/{product_id}")).text)
    return await storefront.post(
        "/cart/add", data={"csrf_token": token, "sku": sku, "product_id": product_id, "quantity": qty}
    )


async def checkout(storefront: httpx.AsyncClient, **changes: str) -> httpx.Response:
    page = await storefront.get("/checkout")
    assert page.status_code == 200, page.text
    attempt = page.text.split('name="attempt" value="', 1)[1].split('"', 1)[0]
    return await storefront.post(
        "/checkout", data={**CHECKOUT, "csrf_token": csrf_of(page.text), "attempt": attempt, **changes}
    )


async def test_a_guest_cart_lives_in_a_cookie_priced_from_the_catalog(storefront: httpx.AsyncClient) -> None:
    added = await add(storefront, qty="2")
    cart = await storefront.get(added.headers["location"])

    assert added.status_code == 303 and added.headers["location"] == "/cart?notice=added"
    assert "HttpOnly" in added.headers["set-cookie"]
    assert "Added to your cart." in cart.text
    assert "Blue Mug" in cart.text and "€25.98" in cart.text
    assert "Sign in to check out" in cart.text


async def test_quantities_are_capped_and_garbage_is_refused(storefront: httpx.AsyncClient) -> None:
    await add(storefront, qty="60")
    capped = await add(storefront, qty="60")
    garbage = await add(storefront, qty="lots")
    bad_sku = await add(storefront, sku="../../x")

    assert capped.headers["location"] == "/cart?notice=quantity-capped"
    assert 'value="99"' in (await storefront.get("/cart")).text
    assert garbage.status_code == 400 and "Choose a quantity from 1 to 99." in garbage.text
    assert bad_sku.status_code == 400


async def test_signing_in_moves_the_guest_cart_into_the_account(storefront: httpx.AsyncClient, apis: Any) -> None:
    await add(storefront, qty="2")
    await signed_in(storefront)

    assert apis.carts["user-ada@example.com"] == {"MUG-1": 2}
    assert "ms_cart" not in storefront.cookies
    cart = await storefront.get("/cart")
    assert "Blue Mug" in cart.text and 'href="/checkout"' in cart.text


async def test_a_customer_changes_and_removes_lines(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront)
    await add(storefront)
    await add(storefront, sku="MUG-2", product_id="p-2")
    token = csrf_of((await storefront.get("/cart")).text)

    await storefront.post("/cart/update", data={"csrf_token": token, "sku": "MUG-1", "quantity": "3"})
    removed = await storefront.post("/cart/update", data={"csrf_token": token, "sku": "MUG-2", "action": "remove"})

    assert removed.headers["location"] == "/cart?notice=removed"
    assert apis.carts["user-ada@example.com"] == {"MUG-1": 3}


async def test_checkout_needs_a_signed_in_customer(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/checkout")

    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Fcheckout&notice=session-expired"


async def test_a_confirmed_order_goes_to_its_confirmation_page(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront)

    assert response.status_code == 303
    assert response.headers["location"] == "/orders/0b7f7c1e-4a8e-4d36-9d1a-3f1f2c9b5a10?placed=1"
    (order,) = apis.called("POST", "/api/v1/orders")
    assert order["payment_method_id"] == "pm_test1" and order["key"].startswith("order-")
    assert order["shipping_address"] == {
        "name": "Ada Buyer",
        "line1": "1 Analytical Way",
        "city": "London",
        "postal_code": "N1 9GU",
        "country": "GB",
    }
    (method,) = apis.called("POST", "/api/v1/payment-methods")
    assert method["key"] == "pm-" + order["key"].removeprefix("order-")  # a resubmitted form replays both
    page = await storefront.get(response.headers["location"])
    assert "Thank you! Your order is confirmed." in page.text and "Cancel this order" in page.text


async def test_a_declined_card_shows_the_reason_and_not_the_card_number(
    storefront: httpx.AsyncClient, apis: Any
) -> None:
    reason = "Your card was declined. Please use another card or payment method."
    apis.order_outcome = (201, order_body("REJECTED", reason=reason))
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront, card_number="5555 5555 5555 4444")

    assert response.status_code == 402
    assert f'id="payment-error">{reason}' in response.text
    assert "5555 5555 5555 4444" not in response.text and "5555555555554444" not in response.text
    assert 'name="card_number" type="text" value=""' in response.text
    assert 'value="1 Analytical Way"' in response.text  # the address stays filled in
    assert "Blue Mug" in response.text  # the cart is still there


async def test_a_changed_price_is_shown_instead_of_charged(storefront: httpx.AsyncClient, apis: Any) -> None:
    changes = [{"sku": "MUG-1", "old_price": 999, "new_price": 1299}]
    apis.order_outcome = (409, {"type": "/problems/price-changed", "status": 409, "changes": changes})
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront)

    assert response.status_code == 409
    assert "Blue Mug is now €12.99 (was €9.99)" in response.text


async def test_a_3d_secure_payment_goes_to_the_approval_page(storefront: httpx.AsyncClient, apis: Any) -> None:
    action = {"type": "redirect_to_url", "url": "/pay/pay_abc"}
    apis.order_outcome = (202, order_body("AWAITING_PAYMENT", next_action=action))
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront, card_number="4000 0027 6000 3184")

    assert response.status_code == 303 and response.headers["location"] == "/pay/pay_abc"
    token = csrf_of((await storefront.get("/cart")).text)
    decided = await storefront.post("/pay/pay_abc", data={"csrf_token": token, "decision": "approve"})
    assert apis.called("POST", "/api/v1/payments/pay_abc/action") == [{"decision": "approve"}]
    assert decided.headers["location"] == "/orders/0b7f7c1e-4a8e-4d36-9d1a-3f1f2c9b5a10?placed=1"


async def test_an_offsite_next_action_url_is_not_followed(storefront: httpx.AsyncClient, apis: Any) -> None:
    action = {"type": "redirect_to_url", "url": "https://evil.example/pay"}
    apis.order_outcome = (202, order_body("AWAITING_PAYMENT", next_action=action))
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront)

    assert response.headers["location"].startswith("/orders/")


async def test_missing_fields_are_explained_without_calling_the_api(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront, city="", card_number="12ab", cvc="1", exp_month="13")

    assert response.status_code == 422
    assert 'id="f-city-error">This field is required.' in response.text
    assert 'id="f-card_number-error">A card number has 12 to 19 digits.' in response.text
    assert "The CVC is the 3 or 4 digits" in response.text and "Choose the expiry month." in response.text
    assert apis.called("POST", "/api/v1/payment-methods") == []


async def test_a_card_refused_by_the_payments_api_is_shown_at_the_number(
    storefront: httpx.AsyncClient, apis: Any
) -> None:
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront, card_number="4242424242424241")

    assert response.status_code == 422
    assert 'id="f-card_number-error">Fails the Luhn check.' in response.text
    assert apis.called("POST", "/api/v1/orders") == []


async def test_payments_down_is_a_readable_message_and_nothing_is_lost(
    storefront: httpx.AsyncClient, apis: Any
) -> None:
    apis.order_outcome = (503, {"type": "/problems/payments-unavailable", "status": 503})
    await signed_in(storefront)
    await add(storefront)
    response = await checkout(storefront)

    assert response.status_code == 503
    assert "Nothing was charged" in response.text and "Blue Mug" in response.text


async def test_an_empty_cart_cannot_check_out(storefront: httpx.AsyncClient) -> None:
    await signed_in(storefront)
    response = await storefront.get("/checkout")

    assert response.status_code == 303 and response.headers["location"] == "/cart?notice=empty-cart"


async def test_another_customers_order_is_not_found(storefront: httpx.AsyncClient) -> None:
    await signed_in(storefront)
    response = await storefront.get("/orders/5f0c2c1e-0000-4000-8000-000000000000")

    assert response.status_code == 404 and "There is no such order in your account." in response.text

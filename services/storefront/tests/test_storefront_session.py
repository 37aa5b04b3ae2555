"""Sessions in cookies: sign-in, sign-up, sign-out, token refresh, CSRF protection and the cookies' flags."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .conftest import PASSWORD, csrf_of, signed_in

StorefrontFactory = Any


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of an answer by cookie name (the whole header, attributes included)."""
    return {value.split("=", 1)[0]: value for value in response.headers.get_list("set-cookie")}


async def test_sign_in_keeps_the_tokens_in_an_httponly_samesite_cookie(storefront: httpx.AsyncClient) -> None:
    page = await storefront.get("/signin")
    response = await storefront.post(
        "/signin",
        data={"csrf_token": csrf_of(page.text), "email": "ada@example.com", "password": PASSWORD, "next": "/orders"},
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/orders?notice=signed-in"
    cookie = set_cookies(response)["ms_session"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP
    assert response.headers["cache-control"] == "private, no-store"
    assert "csrf" not in cookie.lower()


async def test_cookies_are_secure_when_the_request_came_over_tls(storefront: httpx.AsyncClient) -> None:
    response = await storefront.get("/signin", headers={"X-Forwarded-Proto": "https"})

    assert "; Secure" in set_cookies(response)["ms_csrf"]
    assert "HttpOnly" in set_cookies(response)["ms_csrf"]


async def test_a_wrong_password_is_explained_on_the_form(storefront: httpx.AsyncClient) -> None:
    page = await storefront.get("/signin")
    response = await storefront.post(
        "/signin", data={"csrf_token": csrf_of(page.text), "email": "ada@example.com", "password": "nope"}
    )

    assert response.status_code == 401
    assert "The email or the password is wrong." in response.text
    assert 'value="ada@example.com"' in response.text and "nope" not in response.text
    assert "ms_session" not in set_cookies(response)


async def test_sign_up_problems_are_shown_next_to_their_fields(storefront: httpx.AsyncClient) -> None:
    token = csrf_of((await storefront.get("/signup")).text)
    taken = await storefront.post(
        "/signup", data={"csrf_token": token, "name": "Ada", "email": "taken@example.com", "password": PASSWORD}
    )
    weak = await storefront.post(
        "/signup", data={"csrf_token": token, "name": "Ada", "email": "new@example.com", "password": "short"}
    )
    empty = await storefront.post("/signup", data={"csrf_token": token})

    assert taken.status_code == 422
    assert 'id="f-email-error">An account with this email exists. Sign in instead?' in taken.text
    assert 'id="f-password-error">Must have at least 12 characters.' in weak.text
    assert 'aria-invalid="true"' in weak.text
    assert "Enter your name." in empty.text and "Choose a password." in empty.text


async def test_sign_up_signs_in_and_goes_where_asked(storefront: httpx.AsyncClient, apis: Any) -> None:
    token = csrf_of((await storefront.get("/signup")).text)
    response = await storefront.post(
        "/signup",
        data={"csrf_token": token, "name": "Ada", "email": "ada@example.com", "password": PASSWORD, "next": "/cart"},
    )

    assert response.status_code == 303 and response.headers["location"] == "/cart?notice=signed-up"
    assert apis.called("POST", "/api/v1/users") == [{"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}]
    assert "ms_session" in set_cookies(response)


async def test_next_never_leaves_the_site(storefront: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\\\evil.example"):
        page = await storefront.get("/signin")
        response = await storefront.post(
            "/signin",
            data={"csrf_token": csrf_of(page.text), "email": "a@example.com", "password": PASSWORD, "next": target},
        )
        assert response.headers["location"] == "/?notice=signed-in", target
        storefront.cookies.delete("ms_session")


async def test_sign_out_revokes_the_refresh_token_and_drops_the_cookie(
    storefront: httpx.AsyncClient, apis: Any
) -> None:
    await signed_in(storefront)
    page = await storefront.get("/cart")
    response = await storefront.post("/signout", data={"csrf_token": csrf_of(page.text)})

    assert response.status_code == 303
    assert "ms_session=;" in set_cookies(response)["ms_session"] and "Max-Age=0" in set_cookies(response)["ms_session"]
    assert len(apis.called("POST", "/api/v1/auth/logout")) == 1
    assert (await storefront.get("/orders")).status_code == 303  # signed out: to the sign-in page


async def test_a_post_without_the_csrf_token_is_refused(storefront: httpx.AsyncClient, apis: Any) -> None:
    await storefront.get("/")  # the visitor has a CSRF cookie
    missing = await storefront.post("/cart/add", data={"sku": "MUG-1", "product_id": "p-1", "quantity": "1"})
    wrong = await storefront.post(
        "/cart/add", data={"csrf_token": "f" * 64, "sku": "MUG-1", "product_id": "p-1", "quantity": "1"}
    )
    sign_in = await storefront.post("/signin", data={"email": "ada@example.com", "password": PASSWORD})

    for response in (missing, wrong, sign_in):
        assert response.status_code == 403
        assert "This form has expired" in response.text
    assert "ms_cart" not in storefront.cookies and apis.called("POST", "/api/v1/auth/token") == []


async def test_a_token_from_another_visitor_is_refused(make_storefront: StorefrontFactory) -> None:
    async with make_storefront() as mine, make_storefront() as theirs:
        their_token = csrf_of((await theirs.get("/signin")).text)
        await mine.get("/signin")
        response = await mine.post("/signin", data={"csrf_token": their_token, "email": "a@b.c", "password": "x"})

    assert response.status_code == 403


async def test_an_expired_access_token_is_refreshed_once_and_the_page_renders(
    storefront: httpx.AsyncClient, apis: Any
) -> None:
    await signed_in(storefront)
    apis.expire_all()

    responses = await asyncio.gather(*(storefront.get("/cart") for _ in range(3)))

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len(apis.called("POST", "/api/v1/auth/refresh")) == 1  # one refresh, the others reuse its result
    assert "ms_session" in set_cookies(responses[0])  # the rotated tokens go back to the browser


async def test_a_refused_refresh_signs_out_and_asks_to_sign_in(storefront: httpx.AsyncClient, apis: Any) -> None:
    await signed_in(storefront)
    apis.expire_all()
    apis.refresh_tokens.clear()  # revoked

    response = await storefront.get("/orders")

    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Forders&notice=session-expired"
    assert "Max-Age=0" in set_cookies(response)["ms_session"]


async def test_a_malformed_session_cookie_is_a_guest_not_an_error(storefront: httpx.AsyncClient) -> None:
    storefront.cookies.set("ms_session", "not-base64!")
    storefront.cookies.set("ms_cart", "W1siYSJdXQ")  # [["a"]]: the wrong shape

    home = await storefront.get("/")
    cart = await storefront.get("/cart")

    assert home.status_code == 200 and "Sign in" in home.text
    assert cart.status_code == 200 and "Your cart is empty" in cart.text

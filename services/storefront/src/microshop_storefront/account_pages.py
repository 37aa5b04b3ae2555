"""Sign up, sign in, sign out, and the account: profile, notification preferences, addresses, password."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from microshop_storefront.cart_pages import merge_guest_cart
from microshop_storefront.clients import ApiError, SourceUnavailable
from microshop_storefront.domain import safe_next
from microshop_storefront.forms import COUNTRIES, AddressForm, value
from microshop_storefront.session import Tokens, Visitor
from microshop_storefront.web import FormDep, Shop, ShopDep, VisitorDep, redirect

router = APIRouter()

NextQuery = Annotated[str, Query(max_length=500)]
AddressId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


async def _start_session(shop: Shop, visitor: Visitor, email: str, password: str) -> None:
    body = await shop.accounts.sign_in(email=email, password=password)
    visitor.keep_tokens(Tokens(str(body["access_token"]), str(body["refresh_token"])))
    await merge_guest_cart(shop, visitor)


def _sign_in_problem(exc: ApiError) -> str:
    if exc.status == 429:
        wait = exc.problem.get("retry_after")
        return f"{exc.detail} Try again in {wait} seconds." if wait else exc.detail
    if exc.status == 401:
        return "The email or the password is wrong."
    return exc.detail


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_page(request: Request, shop: ShopDep, visitor: VisitorDep, next: NextQuery = "") -> Response:
    if visitor.signed_in:
        return redirect(safe_next(next))
    return shop.render(request, "signin.html", title="Sign in", values={}, next=safe_next(next, ""))


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    email, password, target = value(form, "email", 254), value(form, "password", 1000), value(form, "next", 500)
    errors = {}
    if not email:
        errors["email"] = "Enter your email."
    if not password:
        errors["password"] = "Enter your password."  # noqa: S105 - a message, not a secret
    if not errors:
        try:
            await _start_session(shop, visitor, email, password)
        except ApiError as exc:
            errors["form"] = _sign_in_problem(exc)
        except SourceUnavailable:
            errors["form"] = "We could not reach the account service. Please try again in a moment."
    if errors:
        values = {"email": email}
        status = 401 if "form" in errors else 422
        return shop.render(
            request, "signin.html", status, title="Sign in", values=values, errors=errors, next=safe_next(target, "")
        )
    return redirect(safe_next(target), "signed-in")


@router.get("/signup", response_class=HTMLResponse)
async def sign_up_page(request: Request, shop: ShopDep, visitor: VisitorDep, next: NextQuery = "") -> Response:
    if visitor.signed_in:
        return redirect(safe_next(next))
    return shop.render(request, "signup.html", title="Create your account", values={}, next=safe_next(next, ""))


@router.post("/signup", response_class=HTMLResponse)
async def sign_up(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    name, email = value(form, "name", 100), value(form, "email", 254)
    password, target = value(form, "password", 1000), value(form, "next", 500)
    errors = {}
    for field, given, message in (
        ("name", name, "Enter your name."),
        ("email", email, "Enter your email."),
        ("password", password, "Choose a password."),
    ):
        if not given:
            errors[field] = message
    if not errors:
        try:
            await shop.accounts.register(email=email, password=password, name=name)
            await _start_session(shop, visitor, email, password)
        except ApiError as exc:
            if exc.type == "/problems/email-taken":
                errors["email"] = "An account with this email exists. Sign in instead?"
            else:
                errors = exc.field_errors() or {"form": exc.detail}
        except SourceUnavailable:
            errors["form"] = "We could not reach the account service. Please try again in a moment."
    if errors:
        values = {"name": name, "email": email}
        return shop.render(
            request,
            "signup.html",
            422,
            title="Create your account",
            values=values,
            errors=errors,
            next=safe_next(target, ""),
        )
    return redirect(safe_next(target), "signed-up")


@router.post("/signout")
async def sign_out(shop: ShopDep, visitor: VisitorDep, _: FormDep) -> Response:
    if visitor.tokens is not None:
        # The cookie goes anyway; a refresh token the API did not revoke just runs out.
        with contextlib.suppress(ApiError, SourceUnavailable):
            await shop.accounts.sign_out(visitor.tokens.refresh)
    visitor.forget_tokens()
    return redirect("/", "signed-out")


# ------------------------------------------------------------------------------------------------ account


async def _account(request: Request, shop: Shop, visitor: Visitor, status: int = 200, **extra: Any) -> HTMLResponse:
    try:
        me = await shop.as_customer(visitor, shop.accounts.me)
        addresses = await shop.as_customer(visitor, shop.accounts.addresses)
    except SourceUnavailable:
        return shop.unavailable(request, "Your account")
    extra.setdefault("values", {"country": "GB"})
    return shop.render(
        request, "account.html", status, title="Your account", me=me, addresses=addresses, countries=COUNTRIES, **extra
    )


@router.get("/account", response_class=HTMLResponse)
async def account_page(request: Request, shop: ShopDep, visitor: VisitorDep) -> HTMLResponse:
    return await _account(request, shop, visitor)


@router.post("/account/profile", response_class=HTMLResponse)
async def save_profile(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    phone = value(form, "phone", 32)
    changes = {
        "name": value(form, "name", 100),
        "phone": phone or None,
        "notification_preferences": {
            "email_marketing": bool(value(form, "email_marketing", 2)),
            "sms_order_updates": bool(value(form, "sms_order_updates", 2)),
        },
    }
    try:
        await shop.as_customer(visitor, lambda token: shop.accounts.update_me(token, changes))
    except ApiError as exc:
        errors = {path.split(".")[-1]: msg for path, msg in exc.field_errors().items()} or {"profile": exc.detail}
        return await _account(request, shop, visitor, 422, profile_errors=errors)
    return redirect("/account", "profile-saved")


@router.post("/account/addresses", response_class=HTMLResponse)
async def add_address(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    address = AddressForm.read(form)
    if not address.errors:
        try:
            await shop.as_customer(visitor, lambda token: shop.accounts.add_address(token, address.body()))
        except ApiError as exc:
            address.errors = exc.field_errors() or {"address": exc.detail}
    if address.errors:
        return await _account(request, shop, visitor, 422, values=address.values, errors=address.errors)
    return redirect("/account", "address-added")


@router.post("/account/addresses/{address_id}/delete")
async def delete_address(shop: ShopDep, visitor: VisitorDep, address_id: AddressId, _: FormDep) -> Response:
    with contextlib.suppress(ApiError):  # already gone: the page shows what is left
        await shop.as_customer(visitor, lambda token: shop.accounts.delete_address(token, address_id))
    return redirect("/account", "address-deleted")


@router.post("/account/addresses/{address_id}/default")
async def default_address(shop: ShopDep, visitor: VisitorDep, address_id: AddressId, _: FormDep) -> Response:
    await shop.as_customer(visitor, lambda token: shop.accounts.make_default(token, address_id))
    return redirect("/account", "address-default")


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(request: Request, shop: ShopDep, visitor: VisitorDep, form: FormDep) -> Response:
    current, new = value(form, "current_password", 1000), value(form, "new_password", 1000)
    errors = {}
    if not current:
        errors["current_password"] = "Enter your current password."  # noqa: S105 - a message, not a secret
    if not new:
        errors["new_password"] = "Choose a new password."  # noqa: S105 - a message, not a secret
    if not errors:

        async def change(token: str) -> None:
            # This session's own refresh token (read after any refresh) keeps this browser signed in.
            refresh = visitor.tokens.refresh if visitor.tokens else ""
            await shop.accounts.change_password(token, current=current, new=new, refresh_token=refresh)

        try:
            await shop.as_customer(visitor, change)
        except ApiError as exc:
            if exc.type == "/problems/wrong-password":
                errors["current_password"] = "That is not your current password."  # noqa: S105 - a message, not a secret
            else:
                fields = exc.field_errors()
                errors = {"new_password": fields.get("new_password") or exc.detail}
    if errors:
        return await _account(request, shop, visitor, 422, password_errors=errors)
    return redirect("/account", "password-changed")

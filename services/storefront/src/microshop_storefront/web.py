"""What every page shares: the ``Shop`` (templates and API clients), the visitor, and CSRF-checked form posts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from microshop_storefront.clients import Accounts, Api, Catalog, Mailbox, Orders, Payments
from microshop_storefront.session import CSRF_FIELD, CsrfRefused, Sessions, Visitor, read_visitor
from microshop_storefront.settings import StorefrontSettings

T = TypeVar("T")

# Inline scripts are refused (a missed escape cannot run code); inline styles stay allowed because the
# mailbox shows emails in a srcdoc iframe, which inherits this policy, and emails style inline.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: Messages shown after a redirect (``?notice=added``): a fixed list, so a link cannot put text on a page.
NOTICES = {
    "added": "Added to your cart.",
    "cart-updated": "Your cart was updated.",
    "removed": "Removed from your cart.",
    "quantity-capped": "That is as many as one order can hold (99 of each item).",
    "signed-in": "Welcome back! You are signed in.",
    "signed-up": "Welcome! Your account is ready and you are signed in.",
    "signed-out": "You are signed out.",
    "session-expired": "Please sign in to continue.",
    "cancelled": "Your order is cancelled. Any payment is refunded to you.",
    "cancel-pending": "Your cancellation is under way; the refund follows shortly.",
    "cannot-cancel": "This order can no longer be cancelled.",
    "empty-cart": "Your cart is empty: add something first.",
    "profile-saved": "Your profile is saved.",
    "address-added": "The address is saved.",
    "address-deleted": "The address is deleted.",
    "address-default": "That is now your default address.",
    "password-changed": "Your password is changed. Other devices are signed out.",
    "payment-done": "Your answer was sent to the payment provider.",
    "shipped": "The order is marked shipped.",
    "delivered": "The order is marked delivered.",
    "stock-saved": "Stock updated.",
    "product-saved": "Product saved.",
}


class BadForm(Exception):
    """A form post that could not be read at all (malformed body)."""


class LazyCsrfToken:
    """The visitor's CSRF token, minted when a template first prints it: a page with no form (most pages a
    visitor who is not signed in sees) sets no CSRF cookie and computes no HMAC."""

    __slots__ = ("_key", "_token", "_visitor")

    def __init__(self, visitor: Visitor, key: bytes) -> None:
        self._visitor = visitor
        self._key = key
        self._token: str | None = None

    def __str__(self) -> str:
        if self._token is None:
            self._token = self._visitor.csrf_token(self._key)
        return self._token

    def __html__(self) -> str:  # markupsafe: the token is hex, safe as it is
        return str(self)


@dataclass(frozen=True)
class Shop:
    """What the pages need; built at start-up and kept on ``app.state.shop``."""

    settings: StorefrontSettings
    templates: Jinja2Templates
    catalog: Catalog
    accounts: Accounts
    orders: Orders
    payments: Payments
    mailbox: Mailbox
    admin: Api
    status: Api
    sessions: Sessions
    csrf_key: bytes

    def visitor(self, request: Request) -> Visitor:
        return read_visitor(request, self.settings.session_days * 86_400, self.settings.secure_cookies)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        visitor = self.visitor(request)
        context.setdefault("errors", {})
        context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
        context.update(visitor=visitor, csrf_token=LazyCsrfToken(visitor, self.csrf_key))
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Content-Security-Policy"] = CSP
        if visitor.signed_in:
            response.headers["Cache-Control"] = "private, no-store"
        return response

    def error(self, request: Request, status: int, heading: str, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status, title=heading, heading=heading, message=message)

    def unavailable(self, request: Request, what: str) -> HTMLResponse:
        response = self.render(request, "unavailable.html", 503, title=f"{what} is unavailable", what=what)
        response.headers["Retry-After"] = "5"
        return response

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.render(request, "not_found.html", 404, title="Not found", message=message)

    async def as_customer(self, visitor: Visitor, action: Callable[[str], Awaitable[T]]) -> T:
        """Run an API call with the visitor's access token (refreshed when needed); ``SignInRequired`` else."""
        return await self.sessions.call(visitor, action)


def redirect(url: str, notice: str | None = None, **params: str) -> RedirectResponse:
    """A 303 to ``url`` (after a form post: the browser then GETs it), with a notice code from ``NOTICES``."""
    query = {**params, **({"notice": notice} if notice else {})}
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    return RedirectResponse(url, status_code=303)


async def get_shop(request: Request) -> Shop:
    shop: Shop = request.app.state.shop
    return shop


ShopDep = Annotated[Shop, Depends(get_shop)]


async def get_visitor(request: Request, shop: ShopDep) -> Visitor:
    return shop.visitor(request)


VisitorDep = Annotated[Visitor, Depends(get_visitor)]


async def posted_form(request: Request, shop: ShopDep, visitor: VisitorDep) -> FormData:
    """The posted form, once its CSRF token matches this visitor's cookie; ``CsrfRefused`` otherwise."""
    try:
        form = await request.form(max_files=0, max_fields=200)
    except (MultiPartException, StarletteHTTPException, ValueError) as exc:
        raise BadForm(str(exc)) from exc
    if not visitor.csrf_valid(shop.csrf_key, form.get(CSRF_FIELD)):
        raise CsrfRefused
    return form


FormDep = Annotated[FormData, Depends(posted_form)]

"""The storefront's pages, gathered, and how failures become pages a person understands (never a 500 page
without the shop around it, never a JSON error in a browser)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from microshop_kit.log import get_logger
from microshop_storefront import account_pages, admin_pages, cart_pages, catalog_pages, mailbox_pages, order_pages
from microshop_storefront.clients import ApiError, NotFound, SourceUnavailable
from microshop_storefront.session import CsrfRefused, SignInRequired
from microshop_storefront.web import BadForm, Shop, redirect

log = get_logger("microshop.storefront")

ROUTERS = (
    catalog_pages.router,
    cart_pages.router,
    order_pages.router,
    account_pages.router,
    admin_pages.router,
    mailbox_pages.router,
)


def install_error_pages(app: FastAPI) -> None:
    """Error pages in the shop's layout, in place of the kit's problem+json answers."""

    def shop_of(request: Request) -> Shop:
        shop: Shop = request.app.state.shop
        return shop

    async def sign_in_first(request: Request, _: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect("/signin", "session-expired", next=target if request.method == "GET" else "/")

    async def csrf_refused(request: Request, _: Exception) -> Response:
        message = "This form has expired or did not come from this shop. Go back, reload the page and try again."
        return shop_of(request).error(request, 403, "Please try again", message)

    async def bad_form(request: Request, _: Exception) -> Response:
        return shop_of(request).error(request, 400, "That form could not be read", "Please fill it in again.")

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("upstream unavailable", path=request.url.path, error=str(exc))
        return shop_of(request).unavailable(request, "This page")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if isinstance(exc, NotFound):
            return shop_of(request).not_found(request, "There is nothing here.")
        return shop_of(request).error(request, exc.status, "That did not work", exc.detail)

    async def bad_request(request: Request, _: Exception) -> Response:
        message = "The address of this page is not valid. Check the link, or start again from the home page."
        return shop_of(request).error(request, 400, "That page address is not valid", message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return shop_of(request).not_found(request, "There is no page at this address.")
        if exc.status_code == 405:
            return shop_of(request).error(request, 405, "Not here", "This page cannot be used that way.")
        return shop_of(request).error(request, exc.status_code, "That did not work", str(exc.detail))

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_exception_handler(BadForm, bad_form)
    app.add_exception_handler(SourceUnavailable, unavailable)
    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(StarletteHTTPException, http_error)

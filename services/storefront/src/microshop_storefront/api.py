"""The storefront's pages: catalog, product, mailbox; an API that is down gives a clear page, never a 500."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from microshop_storefront.clients import BadRequest, Catalog, Mailbox, NotFound, SourceUnavailable

router = APIRouter()

# Inline scripts are refused (a missed escape cannot run code); inline styles stay allowed because the
# mailbox shows emails in a srcdoc iframe, which inherits this policy, and emails style inline.
CSP = (
    "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Shop:
    """What the pages need; built at start-up and kept on ``app.state.shop``."""

    templates: Jinja2Templates
    catalog: Catalog
    mailbox: Mailbox
    page_size: int

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Content-Security-Policy"] = CSP
        return response

    def unavailable(self, request: Request, what: str, **context: Any) -> HTMLResponse:
        response = self.render(request, "unavailable.html", 503, what=what, **context)
        response.headers["Retry-After"] = "5"
        return response

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.render(request, "not_found.html", 404, title="Not found", message=message)


def get_shop(request: Request) -> Shop:
    shop: Shop = request.app.state.shop
    return shop


ShopDep = Annotated[Shop, Depends(get_shop)]
PageQuery = Annotated[int, Query(ge=1, le=10_000)]
CategoryQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")]


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def catalog_page(
    request: Request, shop: ShopDep, page: PageQuery = 1, category: CategoryQuery = None
) -> HTMLResponse:
    category = category or None
    try:
        products, categories = await shop.catalog.page(page=page, limit=shop.page_size, category=category)
    except SourceUnavailable:
        return shop.unavailable(request, "The catalog", title="Catalog")
    except (NotFound, BadRequest):
        return shop.not_found(request, f"There is no category {category!r}." if category else "No such page.")
    current = next((c for c in categories if c.slug == category), None)
    return shop.render(
        request,
        "catalog.html",
        title=current.name if current else "Catalog",
        products=products,
        categories=categories,
        category=category,
    )


@router.api_route("/products/{product_id}", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def product_page(
    request: Request, shop: ShopDep, product_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> HTMLResponse:
    try:
        product = await shop.catalog.product(product_id)
    except SourceUnavailable:
        return shop.unavailable(request, "This product", title="Product")
    except (NotFound, BadRequest):
        return shop.not_found(request, "There is no such product.")
    return shop.render(request, "product.html", title=product.name, product=product)


@router.api_route("/mailbox", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def mailbox_page(
    request: Request, shop: ShopDep, to: Annotated[str | None, Query(max_length=254)] = None
) -> HTMLResponse:
    try:
        messages = await shop.mailbox.messages(to=to or None)
    except (SourceUnavailable, NotFound, BadRequest):
        return shop.unavailable(request, "The mailbox", title="Mailbox")
    return shop.render(request, "mailbox.html", title="Mailbox", messages=messages, to=to or "")


@router.api_route("/mailbox/{message_id}", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def message_page(
    request: Request,
    shop: ShopDep,
    message_id: Annotated[str, Path(min_length=1, max_length=200)],
    view: Annotated[str, Query(pattern=r"^(html|text)$")] = "html",
) -> HTMLResponse:
    try:
        message = await shop.mailbox.message(message_id)
    except NotFound:
        return shop.not_found(request, "There is no such email.")
    except (SourceUnavailable, BadRequest):
        return shop.unavailable(request, "The mailbox", title="Mailbox")
    return shop.render(
        request,
        "message.html",
        title=message.subject or "(no subject)",
        message=message,
        show_html=view == "html" and bool(message.html),
    )

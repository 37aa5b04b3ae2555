"""The mailbox of the local run: every email the shop sent, read as the customer would see it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from microshop_storefront.clients import ApiError, NotFound, SourceUnavailable
from microshop_storefront.web import ShopDep

router = APIRouter()


@router.api_route("/mailbox", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def mailbox_page(
    request: Request, shop: ShopDep, to: Annotated[str | None, Query(max_length=254)] = None
) -> HTMLResponse:
    try:
        messages = await shop.mailbox.messages(to=to or None)
    except (SourceUnavailable, ApiError):
        return shop.unavailable(request, "The mailbox")
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
    except (SourceUnavailable, ApiError):
        return shop.unavailable(request, "The mailbox")
    return shop.render(
        request,
        "message.html",
        title=message.subject or "(no subject)",
        message=message,
        show_html=view == "html" and bool(message.html),
    )

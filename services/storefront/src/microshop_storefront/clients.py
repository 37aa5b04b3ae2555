"""The storefront's view of the APIs it renders: the products API and the local mail sink."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from pydantic import ValidationError

from microshop_kit.errors import UpstreamError
from microshop_kit.http import ServiceClient, UpstreamResponse
from microshop_storefront.domain import Category, Message, Product, ProductPage


class SourceUnavailable(Exception):
    """An API the page needs did not answer, or answered with an error of its own (5xx, a bad shape)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source


class NotFound(Exception):
    """The API says the thing the page shows does not exist."""


class BadRequest(Exception):
    """The API refused the query the page passed on (a 4xx other than 404)."""


def _checked(response: UpstreamResponse) -> UpstreamResponse:
    if response.status == 404:
        raise NotFound(response.service)
    if 400 <= response.status < 500:
        raise BadRequest(f"{response.service} answered {response.status}")
    if response.status != 200:
        raise SourceUnavailable(response.service, f"answered {response.status}")
    return response


async def _get(client: ServiceClient, path: str, params: dict[str, str | int] | None = None) -> object:
    try:
        return _checked(await client.get(path, params=params)).json()
    except UpstreamError as exc:  # no answer, circuit open, or not JSON
        raise SourceUnavailable(client.name, str(exc)) from exc


class Catalog:
    """Reads the catalog from the products API."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def page(self, *, page: int, limit: int, category: str | None) -> tuple[ProductPage, list[Category]]:
        params: dict[str, str | int] = {"page": page, "limit": limit}
        if category:
            params["category"] = category
        products, categories = await asyncio.gather(_get(self.client, "/api/v1/products", params), self.categories())
        try:
            return ProductPage.from_api(products, page, limit), categories
        except (ValueError, ValidationError) as exc:
            raise SourceUnavailable(self.client.name, f"unexpected product list: {exc}") from exc

    async def categories(self) -> list[Category]:
        body = await _get(self.client, "/api/v1/categories")
        try:
            items = body.get("items") if isinstance(body, dict) else None
            return [Category.model_validate(item) for item in items or []]
        except ValidationError as exc:
            raise SourceUnavailable(self.client.name, f"unexpected category list: {exc}") from exc

    async def product(self, product_id: str) -> Product:
        body = await _get(self.client, f"/api/v1/products/{quote(product_id, safe='')}")
        try:
            return Product.model_validate(body)
        except ValidationError as exc:
            raise SourceUnavailable(self.client.name, f"unexpected product: {exc}") from exc


class Mailbox:
    """Reads the local mail sink (``GET /messages``, ``GET /messages/{id}``)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def messages(self, *, to: str | None = None) -> list[Message]:
        body = await _get(self.client, "/messages", {"to": to} if to else None)
        items = body.get("items") if isinstance(body, dict) else body  # the sink answers a bare list
        if not isinstance(items, list):
            raise SourceUnavailable(self.client.name, "a message list must be a JSON list")
        try:
            return [Message.model_validate(item) for item in items]
        except ValidationError as exc:
            raise SourceUnavailable(self.client.name, f"unexpected message list: {exc}") from exc

    async def message(self, message_id: str) -> Message:
        body = await _get(self.client, f"/messages/{quote(message_id, safe='')}")
        try:
            return Message.model_validate(body)
        except ValidationError as exc:
            raise SourceUnavailable(self.client.name, f"unexpected message: {exc}") from exc

"""The storefront's view of the platform: the gateway's public API, and the local mail sink.

Each area (catalog, accounts, orders, payments) has its own client and circuit breaker, all pointed at the
gateway: payments being down opens the payments circuit only, and browsing goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from microshop_kit.errors import UpstreamError
from microshop_kit.http import Params, ServiceClient
from microshop_storefront.domain import (
    Address,
    Cart,
    Category,
    Message,
    Order,
    OrderList,
    OrderSummary,
    OrderSummaryList,
    Payment,
    Product,
    ProductPage,
)


class SourceUnavailable(Exception):
    """An API the page needs did not answer, or answered with an error of its own (5xx, a bad shape)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source


class ApiError(Exception):
    """The API refused the request (a 4xx); keeps its problem+json body for messages a person can read."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        super().__init__(f"{status} {self.type}: {self.detail}")

    @property
    def type(self) -> str:
        return str(self.problem.get("type") or "about:blank")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "The request was refused.")

    def field_errors(self, prefix: str = "") -> dict[str, str]:
        """Messages per body field, keyed by the field's dotted path below ``prefix`` (``"card.number"``)."""
        found: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            if not isinstance(error, Mapping):
                continue
            loc = [str(part) for part in error.get("loc") or [] if part != "body"]
            path = ".".join(loc)
            if prefix:
                if not path.startswith(prefix):
                    continue
                path = path[len(prefix) :]
            if path and path not in found:
                found[path] = readable(str(error.get("msg") or "is not valid"))
        return found


class NotFound(ApiError):
    """The API says the thing the page shows does not exist (or is not the caller's)."""


class Unauthorized(ApiError):
    """The access token was refused."""


def readable(message: str) -> str:
    """A validation message as a sentence a person reads next to a field."""
    fixed = {
        "Field required": "This field is required.",
        "field required": "This field is required.",
    }
    message = fixed.get(message, message)
    message = message.removeprefix("Value error, ")
    if message.startswith("String should have at least 1 character"):
        return "This field is required."
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _problem(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True)
class Api:
    """One area of the gateway's public API, as a JSON client that raises for anything but success."""

    client: ServiceClient

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the client's own deadline, shared by its retries
    ) -> Any:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            response = await self.client.request(method, path, json=json, params=params, headers=sent, timeout=timeout)
        except UpstreamError as exc:  # no answer, circuit open
            raise SourceUnavailable(self.client.name, str(exc)) from exc
        if 200 <= response.status < 300:
            if not response.body:
                return None
            try:
                return response.json()
            except UpstreamError as exc:
                raise SourceUnavailable(self.client.name, str(exc)) from exc
        if 400 <= response.status < 500:
            kind = {404: NotFound, 401: Unauthorized}.get(response.status, ApiError)
            raise kind(response.status, _problem(response.body))
        raise SourceUnavailable(self.client.name, f"{method} {path} answered {response.status}")


M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], body: Any, source: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise SourceUnavailable(source, f"unexpected {model.__name__}: {exc}") from exc


def _items(body: Any, source: str) -> list[Any]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SourceUnavailable(source, "a list must be an object with an 'items' list")
    return items


class Catalog:
    """Products and categories (public, no token)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def search(self, params: Mapping[str, str | int], *, page: int, limit: int) -> ProductPage:
        body = await self.api.call("GET", "/api/v1/products", params={**params, "page": page, "limit": limit})
        try:
            return ProductPage.from_api(body, page, limit)
        except (ValueError, ValidationError) as exc:
            raise SourceUnavailable("catalog", f"unexpected product list: {exc}") from exc

    async def categories(self) -> list[Category]:
        body = await self.api.call("GET", "/api/v1/categories")
        return [_model(Category, item, "catalog") for item in _items(body, "catalog")]

    async def product(self, product_id: str) -> Product:
        body = await self.api.call("GET", f"/api/v1/products/{quote(product_id, safe='')}")
        return _model(Product, body, "catalog")

    async def products(self, product_ids: list[str]) -> dict[str, Product]:
        """Several products by id; ids the catalog no longer has are left out."""
        found = await asyncio.gather(*(self.product(pid) for pid in product_ids), return_exceptions=True)
        result: dict[str, Product] = {}
        for pid, item in zip(product_ids, found, strict=True):
            if isinstance(item, Product):
                result[pid] = item
            elif isinstance(item, SourceUnavailable):
                raise item
        return result


class Accounts:
    """Sign-up, sign-in, tokens, profile and addresses."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def register(self, *, email: str, password: str, name: str) -> None:
        await self.api.call("POST", "/api/v1/users", json={"email": email, "password": password, "name": name})

    async def sign_in(self, *, email: str, password: str) -> dict[str, Any]:
        body = await self.api.call("POST", "/api/v1/auth/token", json={"email": email, "password": password})
        return _tokens(body)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        body = await self.api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})
        return _tokens(body)

    async def sign_out(self, refresh_token: str) -> None:
        await self.api.call("POST", "/api/v1/auth/logout", json={"refresh_token": refresh_token})

    async def me(self, token: str) -> dict[str, Any]:
        body = await self.api.call("GET", "/api/v1/users/me", token=token)
        if not isinstance(body, dict):
            raise SourceUnavailable("accounts", "a profile must be an object")
        return body

    async def update_me(self, token: str, changes: Mapping[str, Any]) -> None:
        await self.api.call("PATCH", "/api/v1/users/me", token=token, json=dict(changes))

    async def change_password(self, token: str, *, current: str, new: str, refresh_token: str) -> None:
        body = {"current_password": current, "new_password": new, "refresh_token": refresh_token}
        await self.api.call("POST", "/api/v1/users/me/password", token=token, json=body)

    async def addresses(self, token: str) -> list[Address]:
        body = await self.api.call("GET", "/api/v1/users/me/addresses", token=token)
        return [_model(Address, item, "accounts") for item in _items(body, "accounts")]

    async def add_address(self, token: str, address: Mapping[str, Any]) -> Address:
        body = await self.api.call("POST", "/api/v1/users/me/addresses", token=token, json=dict(address))
        return _model(Address, body, "accounts")

    async def delete_address(self, token: str, address_id: str) -> None:
        await self.api.call("DELETE", f"/api/v1/users/me/addresses/{quote(address_id, safe='')}", token=token)

    async def make_default(self, token: str, address_id: str) -> None:
        path = f"/api/v1/users/me/addresses/{quote(address_id, safe='')}"
        await self.api.call("PATCH", path, token=token, json={"is_default": True})


def _tokens(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("access_token") or not body.get("refresh_token"):
        raise SourceUnavailable("accounts", "a token answer must carry access_token and refresh_token")
    return body


class Orders:
    """The cart and the customer's orders."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def cart(self, token: str) -> Cart:
        return _model(Cart, await self.api.call("GET", "/api/v1/cart", token=token), "orders")

    async def replace_cart(self, token: str, quantities: Mapping[str, int]) -> Cart:
        lines = [{"sku": sku, "quantity": qty} for sku, qty in quantities.items() if qty > 0]
        return _model(Cart, await self.api.call("PUT", "/api/v1/cart", token=token, json={"lines": lines}), "orders")

    async def order(self, token: str, order_id: str) -> Order:
        body = await self.api.call("GET", f"/api/v1/orders/{quote(order_id, safe='')}", token=token)
        return _model(Order, body, "orders")

    async def orders(self, token: str, *, page: int, limit: int) -> OrderList:
        body = await self.api.call("GET", "/api/v1/orders", token=token, params={"page": page, "limit": limit})
        items = [_model(Order, item, "orders") for item in _items(body, "orders")]
        total = int(body.get("total", len(items))) if isinstance(body, dict) else len(items)
        return OrderList(items=items, page=page, pages=max(1, -(-total // limit)))

    async def all_orders(self, token: str, *, status: str | None, page: int, limit: int) -> OrderSummaryList:
        """Admin: every customer's orders, newest first; ``status``: only those in it."""
        params: dict[str, str | int] = {"page": page, "limit": limit, **({"status": status} if status else {})}
        body = await self.api.call("GET", "/api/v1/admin/orders", token=token, params=params)
        items = [_model(OrderSummary, item, "orders") for item in _items(body, "orders")]
        total = body.get("total")  # _items checked that the body is an object
        if not isinstance(total, int) or total < 0:
            raise SourceUnavailable("orders", f"an order list must carry its total, not {total!r}")
        return OrderSummaryList(items=items, page=page, pages=max(1, -(-total // limit)), total=total)

    async def cancel(self, token: str, order_id: str) -> Order:
        body = await self.api.call("POST", f"/api/v1/orders/{quote(order_id, safe='')}/cancel", token=token)
        return _model(Order, body, "orders")


class Payments:
    """Payment methods and the customer's approve/deny step."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def add_method(self, token: str, body: Mapping[str, Any], key: str) -> str:
        answer = await self.api.call(
            "POST", "/api/v1/payment-methods", token=token, json=dict(body), headers={"Idempotency-Key": key}
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise SourceUnavailable("payments", "a payment method answer must carry its id")
        return str(answer["id"])

    async def payment(self, token: str, payment_id: str) -> Payment:
        body = await self.api.call("GET", f"/api/v1/payments/{quote(payment_id, safe='')}", token=token)
        return _model(Payment, body, "payments")

    async def decide(self, token: str, payment_id: str, decision: str) -> Payment:
        body = await self.api.call(
            "POST",
            f"/api/v1/payments/{quote(payment_id, safe='')}/action",
            token=token,
            json={"decision": decision},
        )
        return _model(Payment, body, "payments")


class Mailbox:
    """Reads the local mail sink (``GET /messages``, ``GET /messages/{id}``)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def messages(self, *, to: str | None = None) -> list[Message]:
        body = await self.api.call("GET", "/messages", params={"to": to} if to else None)
        items = body.get("items") if isinstance(body, dict) else body  # the sink answers a bare list
        if not isinstance(items, list):
            raise SourceUnavailable("mailbox", "a message list must be a JSON list")
        return [_model(Message, item, "mailbox") for item in items]

    async def message(self, message_id: str) -> Message:
        return _model(Message, await self.api.call("GET", f"/messages/{quote(message_id, safe='')}"), "mailbox")

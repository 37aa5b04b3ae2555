"""Test helpers for the payments service: Stripe test cards, a provider that can be held, an API driver.

Imported by tests only (it needs httpx, a dev dependency).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from microshop_kit.testing import JwtIssuer
from microshop_payments.domain import Card, PaypalAccount
from microshop_payments.handlers import PaymentsService
from microshop_payments.provider import AuthResult, MethodRef, PaymentProvider

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
EXPIRED = "4000000000000069"
INCORRECT_CVC = "4000000000000127"
PROCESSING_ERROR = "4000000000000119"
THREE_D_SECURE = "4000002760003184"
AMEX = "378282246310005"
TEST_CARDS = [VISA, MASTERCARD, DECLINED, INSUFFICIENT, EXPIRED, INCORRECT_CVC, PROCESSING_ERROR, THREE_D_SECURE, AMEX]
FUTURE_YEAR = date.today().year + 3


def new_order_id() -> str:
    """An order id without long digit runs (a uuid's could, rarely, look like a card number to the PCI scan)."""
    return f"ord_{secrets.token_urlsafe(12)}"


class HeldProvider:
    """Wraps a provider and parks one operation until ``gate`` is set, to keep a request in flight.

    ``point`` is ``"authorize"`` (before the provider is asked), ``"before_capture"`` (authorization recorded,
    capture not asked yet), ``"after_capture"`` (the provider captured, the service has not recorded it) or
    ``"refund"`` (before the provider is asked to refund) or ``"confirm"`` (before the customer's answer
    reaches the provider).
    """

    def __init__(self, inner: PaymentProvider, point: str) -> None:
        self.inner = inner
        self.point = point
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.calls: dict[str, int] = {}
        self._arrived = asyncio.Condition()

    async def until(self, point: str, count: int) -> None:
        """Wait until ``count`` calls have reached ``point``."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.calls.get(point, 0) >= count)

    async def _hold(self, point: str) -> None:
        async with self._arrived:
            self.calls[point] = self.calls.get(point, 0) + 1
            self._arrived.notify_all()
        if point == self.point:
            self.entered.set()
            await self.gate.wait()

    async def tokenize(self, method: Card | PaypalAccount) -> str:
        return await self.inner.tokenize(method)

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        await self._hold("authorize")
        return await self.inner.authorize(amount, currency, method, idempotency_key=idempotency_key)

    async def confirm_action(self, authorization_id: str, *, approved: bool) -> AuthResult:
        await self._hold("confirm")
        return await self.inner.confirm_action(authorization_id, approved=approved)

    async def capture(self, authorization_id: str, amount: int) -> None:
        await self._hold("before_capture")
        await self.inner.capture(authorization_id, amount)
        await self._hold("after_capture")

    async def void(self, authorization_id: str) -> None:
        self.calls["void"] = self.calls.get("void", 0) + 1
        await self.inner.void(authorization_id)

    async def refund(self, authorization_id: str, amount: int, *, idempotency_key: str) -> None:
        await self._hold("refund")
        await self.inner.refund(authorization_id, amount, idempotency_key=idempotency_key)


@dataclass
class Shop:
    """A running payments app and what tests need around it."""

    app: FastAPI
    client: httpx.AsyncClient
    issuer: JwtIssuer
    data_dir: Path

    @property
    def service(self) -> PaymentsService:
        service: PaymentsService = self.app.state.payments
        return service

    def hold(self, point: str) -> HeldProvider:
        held = HeldProvider(self.service.provider, point)
        self.service.provider = held
        return held

    async def add_card(self, user_id: str, number: str = VISA, cvc: str | None = None) -> dict[str, Any]:
        card = {"number": number, "exp_month": 12, "exp_year": FUTURE_YEAR, "cvc": cvc or _cvc_for(number)}
        response = await self.client.post(
            "/api/v1/payment-methods",
            json={"type": "card", "card": card},
            headers=self.issuer.headers(user_id),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def add_paypal(self, user_id: str, email: str = "pay@example.com") -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/payment-methods",
            json={"type": "paypal", "paypal": {"email": email}},
            headers=self.issuer.headers(user_id),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def charge(
        self,
        user_id: str,
        method_id: str,
        *,
        order_id: str | None = None,
        amount: int = 1999,
        key: str | None = None,
        currency: str = "EUR",
    ) -> httpx.Response:
        order_id = order_id or new_order_id()
        body = {
            "order_id": order_id,
            "user_id": user_id,
            "amount": amount,
            "currency": currency,
            "payment_method_id": method_id,
        }
        return await self.client.post("/internal/v1/payments", json=body, headers={"Idempotency-Key": key or order_id})

    async def cancel(self, order_id: str) -> httpx.Response:
        return await self.client.post(f"/internal/v1/payments/{order_id}/cancel")

    async def refund(self, order_id: str, amount: int | None = None, *, key: str | None = None) -> httpx.Response:
        body = {} if amount is None else {"amount": amount}
        headers = {"Idempotency-Key": key or secrets.token_urlsafe(12)}
        return await self.client.post(f"/internal/v1/payments/{order_id}/refund", json=body, headers=headers)

    async def payment(self, order_id: str) -> httpx.Response:
        return await self.client.get(f"/internal/v1/payments/{order_id}")

    async def view(self, user_id: str, payment_id: str) -> httpx.Response:
        return await self.client.get(f"/api/v1/payments/{payment_id}", headers=self.issuer.headers(user_id))

    async def act(self, user_id: str, payment_id: str, decision: str) -> httpx.Response:
        return await self.client.post(
            f"/api/v1/payments/{payment_id}/action", json={"decision": decision}, headers=self.issuer.headers(user_id)
        )

    async def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """The outbox's event envelopes (oldest first), all or of one type."""
        rows = await self.rows("SELECT type, payload FROM outbox ORDER BY seq")
        return [json.loads(row["payload"]) for row in rows if type_ is None or row["type"] == type_]

    async def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.service.db.fetch(sql, params)]


def _cvc_for(number: str) -> str:
    return "7391" if number.startswith(("34", "37")) else "739"


CVCS = ("739", "7391")

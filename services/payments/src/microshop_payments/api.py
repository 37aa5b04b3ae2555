"""HTTP routes of the payments service: schemas, routes, and domain errors mapped to problem responses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from microshop_kit.app import PROBLEM_JSON, PrincipalDep
from microshop_kit.errors import ProblemError, invalid
from microshop_payments.domain import (
    Card,
    CardRejected,
    KeyInFlight,
    KeyReused,
    MethodNotFound,
    PaymentBusy,
    PaypalAccount,
    check_card,
)
from microshop_payments.handlers import (
    Canceled,
    ChargeCommand,
    Charged,
    ChargeOutcome,
    Declined,
    OrderPaidDifferently,
    PaymentsService,
)
from microshop_payments.provider import ProviderError
from microshop_payments.store import StoredAnswer

router = APIRouter(tags=["payment methods"])
internal = APIRouter(tags=["internal"])


def get_payments(request: Request) -> PaymentsService:
    service: PaymentsService = request.app.state.payments
    return service


PaymentsDep = Annotated[PaymentsService, Depends(get_payments)]
IdempotencyKeyHeader = Annotated[
    str, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=255)]

# ------------------------------------------------------------------------------------------------- schemas


class CardIn(BaseModel):
    """A card as entered. Its number and CVC are never echoed: not in errors, reprs or logs."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    number: str = Field(max_length=32, repr=False, description="Digits, spaces allowed")
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=1900, le=9999)
    cvc: str = Field(max_length=8, repr=False)


class PaypalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class PaymentMethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    type: Literal["card", "paypal"]
    card: CardIn | None = None
    paypal: PaypalIn | None = None


class CardMethodOut(BaseModel):
    id: str
    type: Literal["card"]
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaypalMethodOut(BaseModel):
    id: str
    type: Literal["paypal"]
    email: str


class ChargeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=255)
    user_id: str = Field(min_length=1, max_length=255)
    amount: int = Field(gt=0, le=99_999_999_999, strict=True, description="Integer minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")
    payment_method_id: str = Field(min_length=1, max_length=64)


class PaymentOut(BaseModel):
    id: str
    order_id: str
    status: str
    amount: int
    currency: str


class CancelOut(BaseModel):
    order_id: str
    status: Literal["refunded", "voided", "canceled"]


# ---------------------------------------------------------------------------------------------- errors


@contextmanager
def problems() -> Iterator[None]:
    """Map the domain's and the provider's errors to problem responses (the one place that knows HTTP)."""
    try:
        yield
    except CardRejected as exc:
        raise invalid(exc.field, exc.message) from None
    except MethodNotFound:
        raise invalid("payment_method_id", "does not exist for this user") from None
    except KeyReused as exc:
        raise ProblemError(422, "Unprocessable Content", str(exc), type_="/problems/idempotency-key-reused") from None
    except KeyInFlight as exc:
        raise ProblemError(
            409,
            "Conflict",
            str(exc),
            type_="/problems/idempotency-key-in-flight",
            headers={"Retry-After": "1"},
        ) from None
    except PaymentBusy as exc:
        raise ProblemError(
            409, "Conflict", str(exc), type_="/problems/payment-in-flight", headers={"Retry-After": "1"}
        ) from None
    except ProviderError as exc:
        raise ProblemError(
            503,
            "Service Unavailable",
            f"The payment provider did not answer: {exc}",
            type_="/problems/provider-unavailable",
            headers={"Retry-After": "2"},
        ) from None


def render(outcome: ChargeOutcome, instance: str) -> StoredAnswer:
    """The HTTP answer for a charge outcome, as stored for replays."""
    if isinstance(outcome, Charged):
        p = outcome.payment
        body = PaymentOut(
            id=p["id"], order_id=p["order_id"], status=p["status"], amount=p["amount"], currency=p["currency"]
        )
        return StoredAnswer(201, body.model_dump(mode="json"))
    if isinstance(outcome, Declined):
        problem = ProblemError(
            402,
            "Payment Required",
            f"The payment was declined ({outcome.decline_code}).",
            type_="/problems/payment-declined",
            decline_code=outcome.decline_code,
        )
    elif isinstance(outcome, Canceled):
        problem = ProblemError(
            409,
            "Conflict",
            f"The payment of order {outcome.order_id} was canceled ({outcome.status}); it cannot be charged.",
            type_="/problems/payment-canceled",
            order_id=outcome.order_id,
        )
    else:
        assert isinstance(outcome, OrderPaidDifferently)
        problem = ProblemError(
            409,
            "Conflict",
            f"Order {outcome.order_id} already has a payment made with other parameters.",
            type_="/problems/payment-exists",
            order_id=outcome.order_id,
        )
    return StoredAnswer(problem.status, problem.to_body(instance))


def _method_from(body: PaymentMethodIn) -> Card | PaypalAccount:
    if body.type == "card":
        if body.card is None:
            raise CardRejected("card", "is required when type is card")
        if body.paypal is not None:
            raise CardRejected("paypal", "must be absent when type is card")
        card, today = body.card, datetime.now(UTC).date()
        return check_card(card.number, card.exp_month, card.exp_year, card.cvc, today)
    if body.paypal is None:
        raise CardRejected("paypal", "is required when type is paypal")
    if body.card is not None:
        raise CardRejected("card", "must be absent when type is paypal")
    return PaypalAccount(body.paypal.email)


# ----------------------------------------------------------------------------------------------- routes


@router.post("/api/v1/payment-methods", status_code=201)
async def add_payment_method(
    body: PaymentMethodIn, principal: PrincipalDep, payments: PaymentsDep
) -> CardMethodOut | PaypalMethodOut:
    """Save a card (tokenized on entry: only brand, last 4 and expiry are kept) or a PayPal account."""
    with problems():
        method = _method_from(body)
        row = await payments.add_method(principal.user_id, method)
    if row["type"] == "card":
        return CardMethodOut(
            id=row["id"],
            type="card",
            brand=row["brand"],
            last4=row["last4"],
            exp_month=row["exp_month"],
            exp_year=row["exp_year"],
        )
    return PaypalMethodOut(id=row["id"], type="paypal", email=row["email"])


_CHARGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {"description": "Declined: problem `/problems/payment-declined` with `decline_code`"},
    409: {"description": "`/problems/idempotency-key-in-flight` or `/problems/payment-canceled`"},
    422: {"description": "Invalid input, `/problems/idempotency-key-reused`"},
}


@internal.post("/internal/v1/payments", status_code=201, response_model=PaymentOut, responses=_CHARGE_RESPONSES)
async def charge(
    body: ChargeIn, idempotency_key: IdempotencyKeyHeader, payments: PaymentsDep, request: Request
) -> JSONResponse:
    """Authorize and capture an order's payment. The same key and body replay the first answer."""
    command = ChargeCommand(**body.model_dump())
    path = request.url.path
    with problems():
        answer = await payments.charge(idempotency_key, command, lambda outcome: render(outcome, path))
    media_type = PROBLEM_JSON if answer.status_code >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status_code, media_type=media_type, headers=headers)


@internal.post("/internal/v1/payments/{order_id}/cancel")
async def cancel(order_id: OrderIdPath, payments: PaymentsDep) -> CancelOut:
    """Refund a captured payment, void an authorized one, or leave a tombstone so a late charge is refused."""
    with problems():
        status = await payments.cancel(order_id)
    return CancelOut.model_validate({"order_id": order_id, "status": status.value})

"""HTTP routes of the payments service: routes, idempotent answers, and domain errors mapped to problems."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.responses import JSONResponse

from microshop_kit.app import PROBLEM_JSON, PrincipalDep
from microshop_kit.errors import ProblemError, invalid, not_found
from microshop_kit.lean import LeanRoute
from microshop_payments.domain import (
    Card,
    CardRejected,
    Decision,
    IllegalTransition,
    KeyInFlight,
    KeyReused,
    MethodNotFound,
    NotRefundable,
    PaymentBusy,
    PaymentNotFound,
    PaypalAccount,
    RefundTooLarge,
    check_card,
)
from microshop_payments.handlers import (
    ActionRequired,
    Canceled,
    ChargeCommand,
    Charged,
    ChargeOutcome,
    Declined,
    PaymentsService,
)
from microshop_payments.provider import ProviderError
from microshop_payments.schemas import (
    ActionIn,
    CancelOut,
    CardMethodOut,
    ChargeIn,
    ChargeOut,
    InternalPaymentOut,
    PaymentMethodIn,
    PaymentOut,
    PaypalMethodOut,
    RefundIn,
    RefundOut,
    charge_out,
    internal_payment_out,
    payment_out,
)
from microshop_payments.store import StoredAnswer

router = APIRouter(tags=["payments"])
internal = APIRouter(tags=["internal"], route_class=LeanRoute)


async def get_payments(request: Request) -> PaymentsService:
    service: PaymentsService = request.app.state.payments
    return service


PaymentsDep = Annotated[PaymentsService, Depends(get_payments)]
_KEY = Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
IdempotencyKeyHeader = Annotated[str, _KEY]
OptionalKeyHeader = Annotated[str | None, _KEY]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=255)]
PaymentIdPath = Annotated[str, Path(min_length=1, max_length=64)]

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
    except PaymentNotFound as exc:
        raise not_found("Payment of " + exc.what, exc.key) from None
    except KeyReused as exc:
        raise ProblemError(422, "Unprocessable Content", str(exc), type_="/problems/idempotency-key-reused") from None
    except RefundTooLarge as exc:
        raise ProblemError(
            422,
            "Unprocessable Content",
            str(exc),
            type_="/problems/refund-exceeds-captured",
            errors=[{"loc": ["body", "amount"], "msg": str(exc), "type": "value_error"}],
            refundable=exc.refundable,
        ) from None
    except IllegalTransition as exc:
        raise ProblemError(
            409, "Conflict", str(exc), type_="/problems/illegal-transition", payment_status=exc.status.value
        ) from None
    except NotRefundable as exc:
        raise ProblemError(409, "Conflict", str(exc), type_="/problems/not-refundable") from None
    except KeyInFlight as exc:
        raise _retry_conflict(str(exc), "/problems/idempotency-key-in-flight") from None
    except PaymentBusy as exc:
        raise _retry_conflict(str(exc), "/problems/payment-in-flight") from None
    except ProviderError as exc:
        raise ProblemError(
            503,
            "Service Unavailable",
            f"The payment provider gave no final answer: {exc}",
            type_=f"/problems/{exc.code.replace('_', '-')}",
            headers={"Retry-After": "2"},
            code=exc.code,
            retryable=True,
        ) from None


def _retry_conflict(detail: str, type_: str) -> ProblemError:
    return ProblemError(409, "Conflict", detail, type_=type_, headers={"Retry-After": "1"})


def render(outcome: ChargeOutcome, instance: str) -> StoredAnswer:
    """The HTTP answer for a charge outcome, as stored for replays."""
    if isinstance(outcome, Charged | ActionRequired):
        return StoredAnswer(201, charge_out(outcome.payment).model_dump(mode="json", exclude_none=True))
    if isinstance(outcome, Declined):
        code = outcome.payment["code"]
        problem = ProblemError(
            402,
            "Payment Required",
            f"The payment was declined ({code}).",
            type_="/problems/payment-declined",
            code=code,
            decline_code=code,
            payment_id=outcome.payment["id"],
        )
    elif isinstance(outcome, Canceled):
        problem = ProblemError(
            409,
            "Conflict",
            f"The payment of order {outcome.order_id} was canceled; it cannot be charged.",
            type_="/problems/payment-canceled",
            order_id=outcome.order_id,
        )
    else:
        problem = ProblemError(
            409,
            "Conflict",
            f"Order {outcome.order_id} already has a payment made with other parameters.",
            type_="/problems/payment-exists",
            order_id=outcome.order_id,
        )
    return StoredAnswer(problem.status, problem.to_body(instance))


async def _answer(
    payments: PaymentsService,
    request: Request,
    key: str | None,
    payload: Mapping[str, Any],
    work: Callable[[], Awaitable[StoredAnswer]],
    scope: str = "",
) -> JSONResponse:
    """Run a mutation under its Idempotency-Key (when sent): final answers, errors included, are stored and
    replayed; a "retry" answer (503, or 409 with Retry-After) propagates, so the key is free for the retry."""
    instance = request.url.path

    async def final_answer() -> StoredAnswer:
        try:
            with problems():
                return await work()
        except ProblemError as exc:
            if exc.status >= 500 or "Retry-After" in exc.headers:
                raise
            return StoredAnswer(exc.status, exc.to_body(instance))

    if key is None:
        answer = await final_answer()
    else:
        with problems():
            answer = await payments.idempotency.run(key, f"{request.method} {instance}{scope}", payload, final_answer)
    media_type = PROBLEM_JSON if answer.status_code >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status_code, media_type=media_type, headers=headers)


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


def _method_fingerprint(method: Card | PaypalAccount) -> dict[str, Any]:
    """What tells two method requests apart for their Idempotency-Key: never the number or the CVC (not even
    hashed: a hash of a card number can be brute-forced from its brand and last 4)."""
    if isinstance(method, Card):
        return {"brand": method.brand, "last4": method.last4, "exp": [method.exp_month, method.exp_year]}
    return {"paypal": method.email}


# ----------------------------------------------------------------------------------------- public routes

_PUBLIC_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such payment of this user"},
    409: {"description": "`/problems/illegal-transition`, `/problems/idempotency-key-in-flight`"},
}


@router.post("/api/v1/payment-methods", status_code=201, response_model=CardMethodOut | PaypalMethodOut)
async def add_payment_method(
    body: PaymentMethodIn,
    principal: PrincipalDep,
    payments: PaymentsDep,
    request: Request,
    idempotency_key: OptionalKeyHeader = None,
) -> JSONResponse:
    """Save a card (tokenized on entry: only brand, last 4 and expiry are kept) or a PayPal account."""
    with problems():
        method = _method_from(body)

    async def work() -> StoredAnswer:
        row = await payments.add_method(principal.user_id, method)
        out: CardMethodOut | PaypalMethodOut
        if row["type"] == "card":
            fields = {name: row[name] for name in ("id", "brand", "last4", "exp_month", "exp_year")}
            out = CardMethodOut(type="card", **fields)
        else:
            out = PaypalMethodOut(id=row["id"], type="paypal", email=row["email"])
        return StoredAnswer(201, out.model_dump(mode="json"))

    fingerprint = _method_fingerprint(method)
    return await _answer(payments, request, idempotency_key, fingerprint, work, f" user={principal.user_id}")


@router.get("/api/v1/payments/{payment_id}", responses=_PUBLIC_ERRORS)
async def get_payment(payment_id: PaymentIdPath, principal: PrincipalDep, payments: PaymentsDep) -> PaymentOut:
    """One of my payments: status, amount, method brand and last 4, and the action waiting for me, if any."""
    with problems():
        return payment_out(await payments.payment_of_user(payment_id, principal.user_id))


@router.post("/api/v1/payments/{payment_id}/action", response_model=PaymentOut, responses=_PUBLIC_ERRORS)
async def act_on_payment(
    payment_id: PaymentIdPath,
    body: ActionIn,
    principal: PrincipalDep,
    payments: PaymentsDep,
    request: Request,
    idempotency_key: OptionalKeyHeader = None,
) -> JSONResponse:
    """Approve or deny the 3-D Secure or PayPal step of my payment; the same answer again gives the same result."""

    async def work() -> StoredAnswer:
        payment = await payments.act(payment_id, principal.user_id, Decision(body.decision))
        return StoredAnswer(200, payment_out(payment).model_dump(mode="json"))

    payload = body.model_dump()
    return await _answer(payments, request, idempotency_key, payload, work, f" user={principal.user_id}")


# --------------------------------------------------------------------------------------- internal routes

_CHARGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {"description": "Declined: problem `/problems/payment-declined` with `code`"},
    409: {"description": "`/problems/idempotency-key-in-flight`, `/problems/payment-canceled`, `.../payment-exists`"},
    422: {"description": "Invalid input, `/problems/idempotency-key-reused`"},
    503: {"description": "`/problems/processing-error` or `/problems/provider-unavailable`, `retryable: true`"},
}


@internal.post("/internal/v1/payments", status_code=201, response_model=ChargeOut, responses=_CHARGE_RESPONSES)
async def charge(
    body: ChargeIn, idempotency_key: IdempotencyKeyHeader, payments: PaymentsDep, request: Request
) -> JSONResponse:
    """Authorize and capture an order's payment, or stop at ``requires_action`` for the customer's approval."""
    command = ChargeCommand(**body.model_dump())
    with problems():
        method = await payments.method_for(command)

    async def work() -> StoredAnswer:
        return render(await payments.charge(command, method), request.url.path)

    return await _answer(payments, request, idempotency_key, command.fields(), work)


@internal.get("/internal/v1/payments/{order_id}", responses={404: {"description": "The order has no payment"}})
async def get_order_payment(order_id: OrderIdPath, payments: PaymentsDep) -> InternalPaymentOut:
    """The payment of an order with its current status (orders polls it while the customer must act)."""
    with problems():
        return internal_payment_out(await payments.payment_of_order(order_id))


@internal.post("/internal/v1/payments/{order_id}/cancel", response_model=CancelOut)
async def cancel(
    order_id: OrderIdPath, payments: PaymentsDep, request: Request, idempotency_key: OptionalKeyHeader = None
) -> JSONResponse:
    """Refund a captured payment, void an authorized or waiting one, or leave a tombstone so a late charge is
    refused."""

    async def work() -> StoredAnswer:
        status = await payments.cancel(order_id)
        return StoredAnswer(200, CancelOut(order_id=order_id, status=status.value).model_dump(mode="json"))

    return await _answer(payments, request, idempotency_key, {}, work)


@internal.post(
    "/internal/v1/payments/{order_id}/refund",
    status_code=201,
    response_model=RefundOut,
    responses={
        404: {"description": "The order has no payment"},
        409: {"description": "`/problems/not-refundable`, `/problems/idempotency-key-in-flight`"},
        422: {"description": "`/problems/refund-exceeds-captured`, `/problems/idempotency-key-reused`"},
    },
)
async def refund(
    order_id: OrderIdPath,
    idempotency_key: IdempotencyKeyHeader,
    payments: PaymentsDep,
    request: Request,
    body: Annotated[RefundIn | None, Body()] = None,
) -> JSONResponse:
    """Refund part (``amount``) or all that is left of the order's captured payment; publishes
    payment.refunded.v1."""
    amount = None if body is None else body.amount

    async def work() -> StoredAnswer:
        done = await payments.refund(order_id, idempotency_key, amount)
        out = RefundOut(
            id=done.refund["id"],
            payment_id=done.payment["id"],
            order_id=order_id,
            amount=done.refund["amount"],
            currency=done.payment["currency"],
            status="succeeded",
            amount_refunded=done.payment["amount_refunded"],
        )
        return StoredAnswer(201, out.model_dump(mode="json"))

    return await _answer(payments, request, idempotency_key, {"amount": amount}, work)

"""Request and response bodies of the payments API, and how a payment row is shown."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from microshop_kit.db import Row
from microshop_payments.domain import Status

MAX_AMOUNT = 99_999_999_999


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
    amount: int = Field(gt=0, le=MAX_AMOUNT, strict=True, description="Integer minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")
    payment_method_id: str = Field(min_length=1, max_length=64)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int | None = Field(
        default=None, gt=0, le=MAX_AMOUNT, strict=True, description="Integer minor units; default: all that is left"
    )


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]


class NextAction(BaseModel):
    type: Literal["redirect_to_url"] = "redirect_to_url"
    #: A storefront path the customer's browser opens to approve or deny.
    url: str


class ChargeOut(BaseModel):
    """The charge's answer; ``next_action`` only while the customer must act."""

    id: str
    order_id: str
    status: str
    amount: int
    currency: str
    next_action: NextAction | None = None


class MethodOut(BaseModel):
    type: str
    brand: str | None = None
    last4: str | None = None


class PaymentOut(BaseModel):
    """A payment as its owner (and orders) sees it."""

    id: str
    order_id: str
    status: str
    amount: int
    amount_refunded: int
    currency: str | None
    method: MethodOut | None
    #: Why a canceled payment failed (a decline code, ``authentication_failed``, ``action_expired``).
    code: str | None
    next_action: NextAction | None


class InternalPaymentOut(PaymentOut):
    user_id: str | None


class CancelOut(BaseModel):
    order_id: str
    status: Literal["refunded", "voided", "canceled"]


class RefundOut(BaseModel):
    id: str
    payment_id: str
    order_id: str
    amount: int
    currency: str
    status: Literal["succeeded"]
    #: All that is refunded of the payment so far, this refund included.
    amount_refunded: int


def next_action(payment: Row) -> NextAction | None:
    if payment["status"] != Status.REQUIRES_ACTION.value:
        return None
    return NextAction(url=f"/pay/{payment['id']}")


def charge_out(payment: Row) -> ChargeOut:
    return ChargeOut(
        id=payment["id"],
        order_id=payment["order_id"],
        status=payment["status"],
        amount=payment["amount"],
        currency=payment["currency"],
        next_action=next_action(payment),
    )


def payment_out(payment: Row) -> PaymentOut:
    return PaymentOut.model_validate(_payment_fields(payment))


def internal_payment_out(payment: Row) -> InternalPaymentOut:
    return InternalPaymentOut.model_validate({**_payment_fields(payment), "user_id": payment["user_id"]})


def _payment_fields(payment: Row) -> dict[str, object]:
    method = None
    if payment["method_type"] is not None:
        method = MethodOut(type=payment["method_type"], brand=payment["method_brand"], last4=payment["method_last4"])
    return {
        "id": payment["id"],
        "order_id": payment["order_id"],
        "status": payment["status"],
        "amount": payment["amount"],
        "amount_refunded": payment["amount_refunded"],
        "currency": payment["currency"],
        "method": method,
        "code": payment["code"],
        "next_action": next_action(payment),
    }

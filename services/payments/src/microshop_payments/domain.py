"""Payment rules without I/O: card checks, brands, payment states and what the ledger holds for each state."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

#: A card expiring further ahead than this is a typo, not a card.
MAX_CARD_YEARS_AHEAD = 20


class PaymentError(Exception):
    """Base of the payments domain errors (api.py maps each to a problem response)."""


class CardRejected(PaymentError):
    """A card field is invalid. The message never contains the card number or CVC."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class MethodNotFound(PaymentError):
    """The payment method does not exist or belongs to another user (the two are not told apart)."""

    def __init__(self, method_id: str) -> None:
        super().__init__(f"Payment method {method_id} does not exist for this user")
        self.method_id = method_id


class KeyReused(PaymentError):
    """An idempotency key came back with a different request body."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used with a different request")
        self.key = key


class KeyInFlight(PaymentError):
    """The first request with this idempotency key (or another operation on the order) is still running."""

    def __init__(self, key: str) -> None:
        super().__init__(f"A request with Idempotency-Key {key} is still in flight; retry shortly")
        self.key = key


class PaymentBusy(PaymentError):
    """A payment kept changing under a request (a cancel racing a charge, say); the caller retries.

    ``subject`` names it: ``"of order <id>"`` or ``"<payment id>"``.
    """

    def __init__(self, subject: str) -> None:
        super().__init__(f"The payment {subject} is changing right now; retry shortly")
        self.subject = subject


class PaymentNotFound(PaymentError):
    """No payment with this id (or of this order); another user's payment is not told apart from none."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"No payment for {what} {key}")
        self.what = what
        self.key = key


class IllegalTransition(PaymentError):
    """An operation the payment's state does not allow (acting on a canceled payment, refunding an uncaptured one)."""

    def __init__(self, payment_id: str, status: Status, operation: str) -> None:
        super().__init__(f"Cannot {operation} payment {payment_id}: it is {status.value}")
        self.payment_id = payment_id
        self.status = status
        self.operation = operation


class NotRefundable(PaymentError):
    """A refund of a payment that was not captured, or of which nothing is left to refund."""

    def __init__(self, payment_id: str, reason: str) -> None:
        super().__init__(f"Payment {payment_id} cannot be refunded: {reason}")
        self.payment_id = payment_id
        self.reason = reason


class RefundTooLarge(PaymentError):
    """A refund asks for more than what is left of the captured amount."""

    def __init__(self, amount: int, refundable: int) -> None:
        super().__init__(f"A refund of {amount} exceeds what is left to refund ({refundable})")
        self.amount = amount
        self.refundable = refundable


class Status(StrEnum):
    """The states of a payment intent (Stripe's, without the ones before a method is attached)."""

    #: The provider is being asked to authorize; nothing is known yet.
    PROCESSING = "processing"
    #: The customer must approve (3-D Secure, PayPal) at ``/pay/<payment id>``.
    REQUIRES_ACTION = "requires_action"
    #: Authorized: the money is held.
    REQUIRES_CAPTURE = "requires_capture"
    #: Captured. Refunds keep this state and count in ``amount_refunded``.
    SUCCEEDED = "succeeded"
    #: Declined, denied, voided, expired, or canceled before any charge (a tombstone).
    CANCELED = "canceled"


#: The moves a payment may make; everything else is an illegal transition.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PROCESSING: frozenset({Status.REQUIRES_ACTION, Status.REQUIRES_CAPTURE, Status.CANCELED}),
    Status.REQUIRES_ACTION: frozenset({Status.REQUIRES_CAPTURE, Status.CANCELED}),
    Status.REQUIRES_CAPTURE: frozenset({Status.SUCCEEDED, Status.CANCELED}),
    Status.SUCCEEDED: frozenset(),
    Status.CANCELED: frozenset(),
}


def can_move(source: Status, target: Status) -> bool:
    return target in TRANSITIONS[source]


class Decision(StrEnum):
    """The customer's answer to a 3-D Secure or PayPal step."""

    APPROVE = "approve"
    DENY = "deny"


#: Final declines a provider answers (the card or account cannot pay); the charge answers 402 with the code.
DECLINE_CODES = frozenset({"card_declined", "insufficient_funds", "expired_card", "incorrect_cvc"})
#: The customer denied the 3-D Secure or PayPal step.
AUTHENTICATION_FAILED = "authentication_failed"
#: The customer never answered the 3-D Secure or PayPal step in time.
ACTION_EXPIRED = "action_expired"


class EntryKind(StrEnum):
    """Ledger entries. The hold (authorization, void) and the capture (capture, refunds) sum separately."""

    AUTHORIZATION = "authorization"
    VOID = "void"
    CAPTURE = "capture"
    REFUND = "refund"


#: Sign of each entry's amount, so the sums of a payment's entries reconcile with its state.
ENTRY_SIGN = {EntryKind.AUTHORIZATION: 1, EntryKind.VOID: -1, EntryKind.CAPTURE: 1, EntryKind.REFUND: -1}
HOLD_KINDS = frozenset({EntryKind.AUTHORIZATION, EntryKind.VOID})
CAPTURE_KINDS = frozenset({EntryKind.CAPTURE, EntryKind.REFUND})


@dataclass(frozen=True, slots=True)
class Balances:
    """Net sums of a payment's ledger: ``held`` (authorizations less voids), ``captured`` (less refunds)."""

    held: int
    captured: int


def signed(kind: EntryKind, amount: int) -> int:
    return ENTRY_SIGN[kind] * amount


def expected_balances(status: Status, amount: int, amount_refunded: int = 0) -> Balances:
    """What the ledger must sum to for a payment in ``status``.

    A capture uses the authorization up (the hold stays recorded) and refunds return captured money, so a
    succeeded payment holds ``amount`` and has ``amount - amount_refunded`` captured; a voided one (canceled)
    nets zero on both.
    """
    held = amount if status in (Status.REQUIRES_CAPTURE, Status.SUCCEEDED) else 0
    captured = amount - amount_refunded if status is Status.SUCCEEDED else 0
    return Balances(held, captured)


def balances(entries: list[tuple[EntryKind, int]]) -> Balances:
    """Sum signed entries ``(kind, signed amount)`` into the two balances."""
    held = sum(amount for kind, amount in entries if kind in HOLD_KINDS)
    captured = sum(amount for kind, amount in entries if kind in CAPTURE_KINDS)
    return Balances(held, captured)


def refund_amount(requested: int | None, amount: int, refunded: int, pending: int) -> int:
    """What a refund takes: ``requested`` or all that is left; RefundTooLarge beyond what is left."""
    left = amount - refunded - pending
    chosen = left if requested is None else requested
    if chosen > left:
        raise RefundTooLarge(chosen, left)
    return chosen


# ----------------------------------------------------------------------------------------------------- cards


@dataclass(frozen=True, slots=True)
class Card:
    """A card as entered. It lives for one request: it goes to the provider, never to storage or logs."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)

    @property
    def brand(self) -> str:
        return card_brand(self.number)

    @property
    def last4(self) -> str:
        return self.number[-4:]

    def __repr__(self) -> str:  # never the number or the CVC, even in a traceback
        return f"Card(brand={self.brand!r}, last4={self.last4!r}, exp={self.exp_month:02d}/{self.exp_year})"


@dataclass(frozen=True, slots=True)
class PaypalAccount:
    email: str


_DIGITS_AND_SPACES = re.compile(r"^[0-9 ]+$")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number passes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """The card network by its number prefix (IIN ranges)."""
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    if "51" <= digits[:2] <= "55" or "2221" <= digits[:4] <= "2720":
        return "mastercard"
    return "other"


def check_card(number: str, exp_month: int, exp_year: int, cvc: str, today: date) -> Card:
    """A valid, unexpired card, or CardRejected naming the field (never echoing the number)."""
    if not _DIGITS_AND_SPACES.match(number):
        raise CardRejected("card.number", "must contain only digits and spaces")
    digits = number.replace(" ", "")
    if not 12 <= len(digits) <= 19:
        raise CardRejected("card.number", "must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise CardRejected("card.number", "is not a valid card number (Luhn check failed)")
    if not 1 <= exp_month <= 12:
        raise CardRejected("card.exp_month", "must be between 1 and 12")
    if exp_year < today.year:
        raise CardRejected("card.exp_year", "the card has expired")
    if exp_year > today.year + MAX_CARD_YEARS_AHEAD:
        raise CardRejected("card.exp_year", f"must be at most {MAX_CARD_YEARS_AHEAD} years ahead")
    if exp_year == today.year and exp_month < today.month:
        raise CardRejected("card.exp_month", "the card has expired")
    if not (cvc.isascii() and cvc.isdigit() and len(cvc) in (3, 4)):
        raise CardRejected("card.cvc", "must be 3 or 4 digits")
    return Card(digits, exp_month, exp_year, cvc)


# ------------------------------------------------------------------------------------------------ idempotency


def request_hash(scope: str, payload: Mapping[str, Any]) -> str:
    """A stable fingerprint of a request (its route and canonical JSON body) to tell a retry from a reuse."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{scope}\n{canonical}".encode()).hexdigest()

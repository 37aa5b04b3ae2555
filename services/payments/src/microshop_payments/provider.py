"""The payment provider adapter: the interface a real provider implements, and a Stripe test-card simulator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from microshop_payments.domain import AUTHENTICATION_FAILED, Card, PaypalAccount

#: What the simulator stores as a method's reference: the outcome class of the test card, never the number.
SUCCEEDS = "succeeds"
REQUIRES_ACTION = "requires_action"
PROCESSING_ERROR = "processing_error"
PAYPAL = "paypal"
DECLINED_PREFIX = "declined:"

#: Stripe's test cards (https://docs.stripe.com/testing) and the outcome class each one stands for.
TEST_CARDS = {
    "4242424242424242": SUCCEEDS,
    "5555555555554444": SUCCEEDS,
    "4000000000000002": "declined:card_declined",
    "4000000000009995": "declined:insufficient_funds",
    "4000000000000069": "declined:expired_card",
    "4000000000000127": "declined:incorrect_cvc",
    "4000000000000119": PROCESSING_ERROR,
    "4000002760003184": REQUIRES_ACTION,
}


class ProviderError(Exception):
    """The provider gave no final answer (down, timeout, its own processing error): retry later.

    ``code`` is ``provider_unavailable`` when it did not answer, ``processing_error`` when it answered so.
    """

    def __init__(self, message: str, *, code: str = "provider_unavailable") -> None:
        super().__init__(message)
        self.code = code


class ProviderStateError(ProviderError):
    """The provider refused an operation: the authorization is in another state (e.g. void after capture).

    ``state`` is the provider's state of it: ``requires_action``, ``authorized``, ``captured``, ``voided`` or
    ``failed`` (the customer denied the action).
    """

    def __init__(self, authorization_id: str, operation: str, state: str) -> None:
        super().__init__(f"Cannot {operation} authorization {authorization_id}: it is {state}", code="invalid_state")
        self.authorization_id = authorization_id
        self.operation = operation
        self.state = state


class AuthStatus(StrEnum):
    AUTHORIZED = "authorized"
    REQUIRES_ACTION = "requires_action"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The provider's answer to an authorization: authorized or waiting for the customer (with the
    authorization's id), or declined with a code."""

    status: AuthStatus
    authorization_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True, slots=True)
class MethodRef:
    """What the provider needs to charge a stored method: its type and the provider's own reference."""

    type: str
    provider_ref: str


class PaymentProvider(Protocol):
    """A payment provider. Every operation is idempotent: authorize per ``idempotency_key``, refunds per
    theirs, the others per authorization, so a retry after a lost answer or a crash never moves money twice."""

    async def tokenize(self, method: Card | PaypalAccount) -> str:
        """Hand the card (or account) to the provider; returns the provider's reference to store instead."""

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        """Hold ``amount`` on the method (or open a customer step); a repeat with the same key returns the
        first result. ProviderError when there is no final answer."""

    async def confirm_action(self, authorization_id: str, *, approved: bool) -> AuthResult:
        """The customer's answer to the 3-D Secure or PayPal step: authorized, or declined
        (``authentication_failed``). A repeat of the same answer returns the same result."""

    async def capture(self, authorization_id: str, amount: int) -> None:
        """Take the held money; ProviderStateError when the authorization was voided."""

    async def void(self, authorization_id: str) -> None:
        """Release the hold (or close the customer step); ProviderStateError when it was captured meanwhile."""

    async def refund(self, authorization_id: str, amount: int, *, idempotency_key: str) -> None:
        """Give captured money back, in part or in full; never more than was captured in total."""


# ------------------------------------------------------------------------------------------------ simulator

#: operation -> (states it moves from, state it leaves); repeating a finished operation is a no-op.
_TRANSITIONS = {
    "capture": ({"authorized"}, "captured"),
    "void": ({"authorized", "requires_action"}, "voided"),
}


class SimulatedProvider:
    """Follows Stripe's test cards; any other valid card succeeds; a PayPal account always goes through the
    redirect-and-approve step.

    Authorizations live in memory. Their ids derive from the idempotency key, so after a restart the same
    charge gets the same id; an id the simulator no longer knows is taken to be in whatever state the
    operation needs (a real provider remembers).
    """

    def __init__(self) -> None:
        self._results: dict[str, AuthResult] = {}
        self._states: dict[str, str] = {}
        self._amounts: dict[str, int] = {}
        self._refunded: dict[str, int] = {}
        self._refunds: set[str] = set()

    async def tokenize(self, method: Card | PaypalAccount) -> str:
        if isinstance(method, PaypalAccount):
            return PAYPAL
        return TEST_CARDS.get(method.number, SUCCEEDS)

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        previous = self._results.get(idempotency_key)
        if previous is not None:
            return previous
        ref = method.provider_ref
        if ref == PROCESSING_ERROR:
            raise ProviderError("the provider could not process the payment (test card)", code=PROCESSING_ERROR)
        if ref.startswith(DECLINED_PREFIX):
            result = AuthResult(AuthStatus.DECLINED, decline_code=ref.removeprefix(DECLINED_PREFIX))
        else:
            authorization_id = "auth_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            status = AuthStatus.REQUIRES_ACTION if ref in (REQUIRES_ACTION, PAYPAL) else AuthStatus.AUTHORIZED
            result = AuthResult(status, authorization_id=authorization_id)
            self._states[authorization_id] = status.value
            self._amounts[authorization_id] = amount
        self._results[idempotency_key] = result
        return result

    async def confirm_action(self, authorization_id: str, *, approved: bool) -> AuthResult:
        target = "authorized" if approved else "failed"
        state = self._states.get(authorization_id, "requires_action")
        if state == "requires_action":
            self._states[authorization_id] = state = target
        if state != target and not (approved and state == "captured"):
            raise ProviderStateError(authorization_id, "confirm", state)
        if approved:
            return AuthResult(AuthStatus.AUTHORIZED, authorization_id=authorization_id)
        return AuthResult(AuthStatus.DECLINED, authorization_id=authorization_id, decline_code=AUTHENTICATION_FAILED)

    async def capture(self, authorization_id: str, amount: int) -> None:
        known = self._amounts.get(authorization_id, amount)
        if amount > known:
            raise ProviderStateError(authorization_id, "capture more than authorized from", "authorized")
        self._move(authorization_id, "capture")

    async def void(self, authorization_id: str) -> None:
        self._move(authorization_id, "void")

    async def refund(self, authorization_id: str, amount: int, *, idempotency_key: str) -> None:
        if idempotency_key in self._refunds:
            return
        state = self._states.get(authorization_id, "captured")
        if state != "captured":
            raise ProviderStateError(authorization_id, "refund", state)
        captured = self._amounts.get(authorization_id)
        refunded = self._refunded.get(authorization_id, 0) + amount
        if captured is not None and refunded > captured:
            raise ProviderStateError(authorization_id, f"refund {amount} more than captured on", state)
        self._refunded[authorization_id] = refunded
        self._refunds.add(idempotency_key)

    def _move(self, authorization_id: str, operation: str) -> None:
        sources, target = _TRANSITIONS[operation]
        state = self._states.get(authorization_id)
        if state is None or state in sources:
            self._states[authorization_id] = target
        elif state != target:
            raise ProviderStateError(authorization_id, operation, state)

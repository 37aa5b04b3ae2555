"""The payment provider adapter: the interface a real provider implements, and a Stripe test-card simulator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from microshop_payments.domain import Card, PaypalAccount

SUCCEEDS = "succeeds"
DECLINED_PREFIX = "declined:"

#: Stripe's test cards (https://docs.stripe.com/testing) and the outcome class each one stands for.
TEST_CARDS = {
    "4242424242424242": SUCCEEDS,
    "5555555555554444": SUCCEEDS,
    "4000000000000002": "declined:card_declined",
    "4000000000009995": "declined:insufficient_funds",
    "4000000000000069": "declined:expired_card",
}


class ProviderError(Exception):
    """The provider gave no usable answer (down, timeout, malformed reply): nothing is known, retry later."""


class ProviderStateError(ProviderError):
    """The provider refused an operation: the authorization is in another state (e.g. void after capture)."""

    def __init__(self, authorization_id: str, operation: str, state: str) -> None:
        super().__init__(f"Cannot {operation} authorization {authorization_id}: it is {state}")
        self.authorization_id = authorization_id
        self.operation = operation
        self.state = state


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The provider's answer to an authorization: approved with an id, or declined with a code."""

    approved: bool
    authorization_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True, slots=True)
class MethodRef:
    """What the provider needs to charge a stored method: its type and the provider's own reference."""

    type: str
    provider_ref: str


class PaymentProvider(Protocol):
    """A payment provider. Every operation is idempotent: authorize per ``idempotency_key``, the others per
    authorization, so a retry after a lost answer or a crash never charges twice."""

    async def tokenize(self, method: Card | PaypalAccount) -> str:
        """Hand the card (or account) to the provider; returns the provider's reference to store instead."""

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        """Hold ``amount`` on the method; a repeat with the same key returns the first result."""

    async def capture(self, authorization_id: str, amount: int) -> None:
        """Take the held money; ProviderStateError when the authorization was voided."""

    async def void(self, authorization_id: str) -> None:
        """Release the hold; ProviderStateError(state="captured") when it was captured meanwhile."""

    async def refund(self, authorization_id: str, amount: int) -> None:
        """Give captured money back; ProviderStateError when nothing was captured."""


# ------------------------------------------------------------------------------------------------ simulator

#: operation -> (states it moves from, state it leaves); repeating a finished operation is a no-op.
_TRANSITIONS = {
    "capture": ({"authorized"}, "captured"),
    "void": ({"authorized"}, "voided"),
    "refund": ({"captured"}, "refunded"),
}


class SimulatedProvider:
    """Follows Stripe's test cards; any other Luhn-valid card and every PayPal account succeed.

    Authorizations live in memory. Their ids derive from the idempotency key, so after a restart the same
    charge gets the same id; an id the simulator no longer knows is taken to be in whatever state the
    operation needs (a real provider remembers).
    """

    def __init__(self) -> None:
        self._results: dict[str, AuthResult] = {}
        self._states: dict[str, str] = {}
        self._amounts: dict[str, int] = {}

    async def tokenize(self, method: Card | PaypalAccount) -> str:
        if isinstance(method, PaypalAccount):
            return SUCCEEDS
        return TEST_CARDS.get(method.number, SUCCEEDS)

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        previous = self._results.get(idempotency_key)
        if previous is not None:
            return previous
        if method.provider_ref.startswith(DECLINED_PREFIX):
            result = AuthResult(approved=False, decline_code=method.provider_ref.removeprefix(DECLINED_PREFIX))
        elif method.provider_ref == SUCCEEDS:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            result = AuthResult(approved=True, authorization_id=f"auth_{digest}")
            self._states[f"auth_{digest}"] = "authorized"
            self._amounts[f"auth_{digest}"] = amount
        else:
            result = AuthResult(approved=False, decline_code="processing_error")
        self._results[idempotency_key] = result
        return result

    async def capture(self, authorization_id: str, amount: int) -> None:
        known = self._amounts.get(authorization_id, amount)
        if amount > known:
            raise ProviderStateError(authorization_id, "capture more than authorized from", "authorized")
        self._move(authorization_id, "capture")

    async def void(self, authorization_id: str) -> None:
        self._move(authorization_id, "void")

    async def refund(self, authorization_id: str, amount: int) -> None:
        self._move(authorization_id, "refund")

    def _move(self, authorization_id: str, operation: str) -> None:
        sources, target = _TRANSITIONS[operation]
        state = self._states.get(authorization_id)
        if state is None or state in sources:
            self._states[authorization_id] = target
        elif state != target:
            raise ProviderStateError(authorization_id, operation, state)

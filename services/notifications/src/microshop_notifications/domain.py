"""Notification rules with no I/O: channels, message states, money formatting, retry policy, reply classes."""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass
from decimal import Decimal

EMAIL = "email"
SMS = "sms"
#: Mail a customer gets because of something they did (an order, an account): no List-Unsubscribe.
TRANSACTIONAL = "transactional"
#: Mail a customer may opt out of: carries List-Unsubscribe (RFC 2369) and one-click unsubscribe (RFC 8058).
MARKETING = "marketing"

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

# ISO 4217 minor-unit exponents that differ from the usual 2.
_EXPONENTS = {
    "BHD": 3,
    "CLP": 0,
    "IQD": 3,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "OMR": 3,
    "TND": 3,
    "UGX": 0,
    "VND": 0,
    "XAF": 0,
    "XOF": 0,
}


class Status(enum.StrEnum):
    PENDING = "pending"  # recorded, not tried yet
    FAILED = "failed"  # the last attempt failed transiently; tried again at next_attempt_at
    SENT = "sent"
    DEAD = "dead"  # permanently refused, or out of attempts: kept with its last error, never resent


@dataclass(frozen=True, slots=True)
class Email:
    """An email ready to record: who gets it and what it says."""

    recipient: str
    subject: str
    text: str
    html: str
    kind: str = TRANSACTIONAL


@dataclass(frozen=True, slots=True)
class Sms:
    """A text message ready to record; ``recipient`` is an E.164 number."""

    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Contact:
    """What the service knows of a user to write to them."""

    user_id: str
    email: str
    name: str
    phone: str | None = None
    sms_order_updates: bool = False
    deleted: bool = False

    @property
    def sms_number(self) -> str | None:
        """The number order updates go to by SMS, or None (no phone, no opt-in, or the account is gone)."""
        if self.deleted or not self.sms_order_updates or not self.phone:
            return None
        return self.phone if is_e164(self.phone) else None


def is_e164(number: str) -> bool:
    """``+`` and 7 to 15 digits, the first not 0 (ITU-T E.164)."""
    return _E164.match(number) is not None


class SendFailure(Exception):
    """One attempt to hand a message over failed; ``permanent`` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class RecipientUnknown(Exception):
    """The users service says the user does not exist (or was deleted): no retry can address the message."""


class DirectoryUnavailable(Exception):
    """The users service did not answer a lookup: the message waits and the lookup is tried again later."""


def undeliverable(email: Email) -> str | None:
    """Why an email can never be sent (kept as a dead message, so the history shows it), or None."""
    address = email.recipient
    local, at, domain = address.rpartition("@")
    if not address:
        return "The event carries no email address"
    if not (at and local and domain) or any(c.isspace() or c in '<>,;"' for c in address):
        return f"Email address {address!r} is not valid"
    return None


def is_permanent_reply(code: int) -> bool:
    """RFC 5321: 5yz replies are permanent negative completions, 4yz transient ones."""
    return 500 <= code < 600


def format_money(minor: int, currency: str) -> str:
    """``format_money(123456, "EUR") == "1,234.56 EUR"``; the exponent follows ISO 4217."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    amount = Decimal(minor).scaleb(-exponent)
    return f"{amount:,.{exponent}f} {currency.upper()}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a message is tried: exponential backoff, capped, then dead."""

    max_attempts: int
    base_seconds: float
    cap_seconds: float

    def after_failure(self, failure: SendFailure, attempts: int) -> Status:
        """The state a message goes to after a failed attempt (``attempts`` counts this one)."""
        if failure.permanent or attempts >= self.max_attempts:
            return Status.DEAD
        return Status.FAILED

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failure.

        Half the delay is fixed and half random, so messages that failed together (the SMTP server was
        down) spread out instead of hitting the server again in one burst.
        """
        delay = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        uniform = rng.uniform if rng is not None else random.uniform
        return delay / 2 + uniform(0, delay / 2)

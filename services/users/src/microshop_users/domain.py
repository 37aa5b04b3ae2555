"""Rules of the users service: accounts, profiles, addresses, password policy, refresh tokens (no I/O)."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from microshop_users.countries import COUNTRY_CODES

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256
MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 100
#: E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


# --------------------------------------------------------------------------------------------------- errors


class UsersError(Exception):
    """Base of the users service's domain errors."""


class InvalidEmail(UsersError):
    """The email address is not one we can accept."""


class WeakPassword(UsersError):
    """The password breaks the password policy."""


class InvalidName(UsersError):
    """The display name is empty or too long."""


class EmailTaken(UsersError):
    """An account with this (normalised) email exists."""


class InvalidCredentials(UsersError):
    """Unknown email, wrong password or inactive account: deliberately one error for all three."""


class InvalidRefreshToken(UsersError):
    """Unknown, expired, used or revoked refresh token: deliberately one error for all."""


class InvalidInput(UsersError):
    """A value breaks a rule of the profile or an address; ``field`` names it (dotted, as in the request)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WrongPassword(UsersError):
    """The password given to confirm a change (password change, account deletion) is not the account's."""


class UserNotFound(UsersError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} does not exist")
        self.user_id = user_id


class AddressNotFound(UsersError):
    """No such address among the caller's own (another user's address is reported the same way)."""

    def __init__(self, address_id: str) -> None:
        super().__init__(f"address {address_id!r} does not exist")
        self.address_id = address_id


class TooManyAddresses(UsersError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"an account keeps at most {limit} addresses; delete one first")
        self.limit = limit


# ---------------------------------------------------------------------------------------------------- users


@dataclass(frozen=True, slots=True)
class NotificationPreferences:
    """What the account agreed to receive beyond the messages an order needs (both opt-in)."""

    email_marketing: bool = False
    sms_order_updates: bool = False


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    roles: tuple[Role, ...]
    active: bool
    created_at: datetime
    phone: str | None = None
    preferences: NotificationPreferences = NotificationPreferences()  # frozen, so safe to share
    deleted_at: datetime | None = None

    @property
    def can_order(self) -> bool:
        """Whether checkout may proceed for this account (the saga asks before reserving stock)."""
        return self.active and self.deleted_at is None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


# The local part is the RFC 5322 dot-atom; the domain is plain DNS labels (punycode for IDNs). Written here
# rather than with email-validator, which refuses special-use domains such as ``.local`` (the demo account).
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_email(raw: str) -> str:
    """The canonical form of an email address (trimmed, lower-case); raises InvalidEmail."""
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL_CHARS:
        raise InvalidEmail(f"must be at most {MAX_EMAIL_CHARS} characters")
    local, at, domain = email.rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL.match(local):
        raise InvalidEmail(f"{raw.strip()[:80]!r} is not an email address")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidEmail(f"the domain {domain[:80]!r} is not valid")
    return email


def normalise_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidName(f"must be 1 to {MAX_NAME_CHARS} characters")
    return name


# Passwords at least MIN_PASSWORD_CHARS long that top public breach lists; shorter ones fail on length.
COMMON_PASSWORDS = frozenset(
    """
    000000000000 111111111111 123123123123 123321123321 123456789012 1234567890123 12345678901234
    123456123456 1q2w3e4r5t6y 1qaz2wsx3edc zaq12wsxcde3 qwerty123456 qwertyuiop12 qwertyuiopasdfgh
    qwertyuiop123 abcdefghijkl abc123456789 abcd12345678 password1234 password12345 password123456
    password123! passwordpassword passw0rd1234 p@ssw0rd1234 p@ssword1234 iloveyou1234 letmein12345
    welcome12345 welcome@1234 changeme1234 administrator admin1234567 adminadmin123 trustno1trustno1
    football1234 baseball1234 superman1234 sunshine1234 princess1234 monkey123456 dragon123456
    starwars1234 whatever1234 microshop123 microshop1234 correcthorsebatterystaple
    """.split()  # noqa: SIM905 - one word per entry reads better than 47 quoted lines
)


def check_password(password: str) -> None:
    """Raise WeakPassword unless the password meets the policy (NIST SP 800-63B: length and a blocklist,
    no composition rules)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"must be at most {MAX_PASSWORD_CHARS} characters")
    if password.lower() in COMMON_PASSWORDS or len(set(password)) <= 2:
        raise WeakPassword("is too common; choose a less guessable one")


# -------------------------------------------------------------------------------------------------- profile


def normalise_phone(raw: str, where: str = "phone") -> str:
    """A phone number in E.164 (``+447700900123``), the form SMS providers take; spaces and hyphens people
    type between digit groups are dropped, anything else must already be E.164."""
    phone = raw.strip().replace(" ", "").replace("-", "")
    if not E164.match(phone):
        raise InvalidInput(where, f"{raw.strip()[:32]!r} is not an E.164 number (+, country code, up to 15 digits)")
    return phone


class Keep(enum.Enum):
    """Marks a field a change leaves as it is (None would mean: clear it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """What the owner changes in a profile; fields left at KEEP stay as they are."""

    name: str | Keep = KEEP
    phone: str | Keep | None = KEEP
    email_marketing: bool | Keep = KEEP
    sms_order_updates: bool | Keep = KEEP


def change_profile(user: User, change: ProfileChange) -> User:
    """The user with ``change`` applied; raises InvalidName/InvalidInput. SMS updates need a phone number."""
    name = user.name if change.name is KEEP else normalise_name(change.name)
    phone = user.phone if change.phone is KEEP else (None if change.phone is None else normalise_phone(change.phone))
    prefs = user.preferences
    if change.email_marketing is not KEEP:
        prefs = replace(prefs, email_marketing=change.email_marketing)
    if change.sms_order_updates is not KEEP:
        prefs = replace(prefs, sms_order_updates=change.sms_order_updates)
    if prefs.sms_order_updates and phone is None:
        at_fault = "phone" if change.phone is None else "notification_preferences.sms_order_updates"
        raise InvalidInput(at_fault, "SMS order updates need a phone number")
    return replace(user, name=name, phone=phone, preferences=prefs)


def anonymised(user: User, now: datetime) -> User:
    """What remains of a deleted account: the id (orders refer to it) and nothing that identifies a person.
    The email becomes unique but undeliverable (RFC 2606 ``.invalid``), which frees the real one."""
    return replace(
        user,
        email=f"deleted-{user.id}@deleted.invalid",
        name="Deleted user",
        phone=None,
        preferences=NotificationPreferences(),
        active=False,
        deleted_at=now,
    )


# ------------------------------------------------------------------------------------------------ addresses

ADDRESS_LIMITS = {"name": MAX_NAME_CHARS, "line1": 200, "line2": 200, "city": 100, "postal_code": 20}


@dataclass(frozen=True, slots=True)
class AddressFields:
    """An address as the owner writes it (shipping name, lines, city, postal code, country, phone)."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None
    phone: str | None = None

    def merged(self, changes: Mapping[str, str | None]) -> AddressFields:
        """These fields with ``changes`` applied (by field name; None clears an optional field)."""
        unknown = sorted(set(changes) - set(self.__slots__))
        if unknown:
            raise ValueError(f"not address fields: {unknown}")
        values: dict[str, Any] = {name: changes.get(name, getattr(self, name)) for name in self.__slots__}
        return AddressFields(**values)


@dataclass(frozen=True, slots=True)
class Address:
    id: str
    user_id: str
    fields: AddressFields
    is_default: bool
    created_at: datetime
    updated_at: datetime


def _required(name: str, value: str | None) -> str:
    text, limit = (value or "").strip(), ADDRESS_LIMITS[name]
    if not 1 <= len(text) <= limit:
        raise InvalidInput(name, f"must be 1 to {limit} characters")
    return text


def normalise_address(raw: AddressFields) -> AddressFields:
    """Trimmed fields, an upper-case ISO 3166-1 alpha-2 country, an E.164 phone; raises InvalidInput."""
    country = raw.country.strip().upper()
    if country not in COUNTRY_CODES:
        raise InvalidInput("country", f"{raw.country[:8]!r} is not an ISO 3166-1 alpha-2 country code")
    line2 = (raw.line2 or "").strip()
    return AddressFields(
        name=_required("name", raw.name),
        line1=_required("line1", raw.line1),
        line2=_required("line2", line2) if line2 else None,
        city=_required("city", raw.city),
        postal_code=_required("postal_code", raw.postal_code),
        country=country,
        phone=normalise_phone(raw.phone) if raw.phone and raw.phone.strip() else None,
    )


# ------------------------------------------------------------------------------------------- refresh tokens


class RefreshState(enum.Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REUSED = "reused"  # presented after rotation: treat as stolen and revoke its family
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token_hash: str
    family_id: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> RefreshState:
        if self.revoked_at is not None:
            return RefreshState.REVOKED
        if self.used_at is not None:
            return RefreshState.REUSED
        if now >= self.expires_at:
            return RefreshState.EXPIRED
        return RefreshState.VALID


def new_refresh_secret() -> str:
    """An opaque refresh token (256 bits of randomness); only its hash is ever stored."""
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    # A plain SHA-256 suffices (no salt, no stretching): the input is 256 random bits, not a password.
    return hashlib.sha256(token.encode()).hexdigest()

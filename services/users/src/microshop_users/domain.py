"""Rules of the users service: accounts, roles, password policy, refresh-token states (no I/O)."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256
MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 100


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


class UserNotFound(UsersError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} does not exist")
        self.user_id = user_id


# ---------------------------------------------------------------------------------------------------- users


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    roles: tuple[Role, ...]
    active: bool
    created_at: datetime

    @property
    def can_order(self) -> bool:
        """Whether checkout may proceed for this account (the saga asks before reserving stock)."""
        return self.active


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

"""Request and response bodies of the users API.

Every request body refuses unknown fields (``extra="forbid"``): a client never sets its own ``roles``,
``id``, ``password_hash`` or ``created_at``, and a typo is a 422 rather than a silently ignored change.
Response models list their fields explicitly, so no hash and no stored token can leak into one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from microshop_users.admin import AccountStatus
from microshop_users.domain import (
    KEEP,
    MAX_EMAIL_CHARS,
    MAX_NAME_CHARS,
    MAX_PASSWORD_CHARS,
    Address,
    AddressFields,
    ProfileChange,
    User,
)
from microshop_users.handlers import TokenPair

Email = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL_CHARS, examples=["ada@example.com"])]
Secret = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS, repr=False)]
RefreshSecret = Annotated[str, Field(min_length=1, max_length=256, repr=False)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Phone = Annotated[str, Field(max_length=32, description="E.164, e.g. +447700900123", examples=["+447700900123"])]
Country = Annotated[
    str, Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 country code", examples=["GB"])
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def _not_null(value: Any) -> Any:
    """For PATCH fields that may be left out but not cleared: an explicit null is refused."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


# -------------------------------------------------------------------------------------------- accounts


class RegisterIn(Strict):
    email: Email
    password: Secret = Field(description="At least 12 characters, not a commonly used password")
    name: Name


class SignInIn(Strict):
    email: Email
    password: Secret


class RefreshIn(Strict):
    refresh_token: RefreshSecret


class PreferencesOut(BaseModel):
    email_marketing: bool
    sms_order_updates: bool


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    phone: str | None
    notification_preferences: PreferencesOut
    roles: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        prefs = PreferencesOut(
            email_marketing=user.preferences.email_marketing, sms_order_updates=user.preferences.sms_order_updates
        )
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            phone=user.phone,
            notification_preferences=prefs,
            roles=[str(role) for role in user.roles],
            created_at=user.created_at,
        )


class PreferencesPatch(Strict):
    email_marketing: StrictBool | None = None
    sms_order_updates: StrictBool | None = None

    _no_nulls = field_validator("email_marketing", "sms_order_updates")(_not_null)


class ProfilePatch(Strict):
    """Only the fields sent change. ``phone: null`` removes the phone number; the email cannot change here."""

    name: Name | None = None
    phone: Phone | None = None
    notification_preferences: PreferencesPatch | None = None

    _no_nulls = field_validator("name", "notification_preferences")(_not_null)

    def change(self) -> ProfileChange:
        prefs = self.notification_preferences or PreferencesPatch()
        return ProfileChange(
            name=KEEP if self.name is None else self.name,
            phone=self.phone if "phone" in self.model_fields_set else KEEP,
            email_marketing=KEEP if prefs.email_marketing is None else prefs.email_marketing,
            sms_order_updates=KEEP if prefs.sms_order_updates is None else prefs.sms_order_updates,
        )


class PasswordChangeIn(Strict):
    current_password: Secret
    new_password: Secret = Field(description="At least 12 characters, not a commonly used password")
    refresh_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        repr=False,
        description="This session's refresh token: its session stays signed in. Every other session (every "
        "session, when left out) is signed out.",
    )


class DeleteAccountIn(Strict):
    password: Secret = Field(description="The account's password, to confirm")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2.0 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


class UserSummaryOut(BaseModel):
    id: str
    email: str
    name: str
    active: bool
    can_order: bool


# ------------------------------------------------------------------------------------------- addresses


class AddressIn(Strict):
    name: Name = Field(description="Who receives the parcel")
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: Country
    phone: Phone | None = None
    is_default: StrictBool | None = Field(
        default=None, description="Make this the default address (the first address always is)"
    )

    def fields(self) -> AddressFields:
        return AddressFields(**self.model_dump(exclude={"is_default"}))


class AddressPatch(Strict):
    """Only the fields sent change; ``line2`` and ``phone`` may be cleared with null."""

    name: Name | None = None
    line1: str | None = Field(default=None, min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, min_length=1, max_length=100)
    postal_code: str | None = Field(default=None, min_length=1, max_length=20)
    country: Country | None = None
    phone: Phone | None = None
    is_default: StrictBool | None = Field(default=None, description="true: make this the default address")

    _no_nulls = field_validator("name", "line1", "city", "postal_code", "country", "is_default")(_not_null)

    def changes(self) -> dict[str, str | None]:
        sent: dict[str, str | None] = self.model_dump(include=self.model_fields_set, exclude={"is_default"})
        return sent


class AddressOut(BaseModel):
    id: str
    name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country: str
    phone: str | None
    is_default: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, address: Address) -> AddressOut:
        fields = address.fields
        return cls(
            id=address.id,
            name=fields.name,
            line1=fields.line1,
            line2=fields.line2,
            city=fields.city,
            postal_code=fields.postal_code,
            country=fields.country,
            phone=fields.phone,
            is_default=address.is_default,
            created_at=address.created_at,
            updated_at=address.updated_at,
        )


class AddressListOut(BaseModel):
    items: list[AddressOut]


# ----------------------------------------------------------------------------------------------- admin


class AdminUserOut(BaseModel):
    id: str
    email: str
    name: str
    phone: str | None
    roles: list[str]
    active: bool
    created_at: datetime
    deleted_at: datetime | None
    failed_sign_ins: int = Field(description="Consecutive failed sign-ins still remembered")
    locked_until: datetime | None = Field(description="Set while sign-in is locked after too many failures")

    @classmethod
    def of(cls, status: AccountStatus) -> AdminUserOut:
        user = status.user
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            phone=user.phone,
            roles=[str(role) for role in user.roles],
            active=user.active,
            created_at=user.created_at,
            deleted_at=user.deleted_at,
            failed_sign_ins=status.failed_sign_ins,
            locked_until=status.locked_until,
        )


class AdminUserPage(BaseModel):
    items: list[AdminUserOut]
    page: int
    limit: int
    total: int

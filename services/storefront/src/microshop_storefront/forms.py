"""Form input as the pages read it, checked before it is sent on: addresses, payment details, quantities."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

COUNTRIES: tuple[tuple[str, str], ...] = (
    ("AU", "Australia"),
    ("AT", "Austria"),
    ("BE", "Belgium"),
    ("CA", "Canada"),
    ("CZ", "Czechia"),
    ("DK", "Denmark"),
    ("FI", "Finland"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("IE", "Ireland"),
    ("IT", "Italy"),
    ("JP", "Japan"),
    ("NL", "Netherlands"),
    ("NZ", "New Zealand"),
    ("NO", "Norway"),
    ("PL", "Poland"),
    ("PT", "Portugal"),
    ("ES", "Spain"),
    ("SE", "Sweden"),
    ("CH", "Switzerland"),
    ("GB", "United Kingdom"),
    ("US", "United States"),
)
ADDRESS_FIELDS = ("name", "line1", "line2", "city", "postal_code", "country")
SKU = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUIRED = "This field is required."


def value(form: FormData, name: str, limit: int = 200) -> str:
    """A text field, trimmed and cut to ``limit`` characters; a file upload or a missing field is empty."""
    raw = form.get(name)
    return raw.strip()[:limit] if isinstance(raw, str) else ""


def quantity(raw: str, *, low: int, high: int) -> int | None:
    """A quantity typed into a field, or None when it is not a whole number in ``low..high``."""
    if not raw.isdigit() or len(raw) > 3:
        return None
    number = int(raw)
    return number if low <= number <= high else None


@dataclass
class AddressForm:
    """A postal address typed into a form; ``errors`` has a message per field at fault."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, form: FormData) -> AddressForm:
        values = {name: value(form, name) for name in ADDRESS_FIELDS}
        values["country"] = values["country"].upper()
        result = cls(values)
        for name in ("name", "line1", "city", "postal_code"):
            if not values[name]:
                result.errors[name] = REQUIRED
        if not re.fullmatch(r"[A-Z]{2}", values["country"]):
            result.errors["country"] = "Choose a country."
        return result

    def body(self) -> dict[str, str]:
        """The API's address (``line2`` only when given)."""
        return {name: text for name, text in self.values.items() if text or name != "line2"}


@dataclass
class PaymentForm:
    """The payment part of the checkout form; the card number and CVC are never shown back on a page."""

    method: str
    body: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    paypal_email: str = ""
    exp_month: str = ""
    exp_year: str = ""

    @classmethod
    def read(cls, form: FormData) -> PaymentForm:
        method = value(form, "method", 10)
        if method == "paypal":
            email = value(form, "paypal_email", 254)
            result = cls("paypal", {"type": "paypal", "paypal": {"email": email}}, paypal_email=email)
            if "@" not in email:
                result.errors["paypal_email"] = "Enter the email of your PayPal account."
            return result
        number = re.sub(r"[\s-]", "", value(form, "card_number", 40))
        cvc = value(form, "cvc", 8)
        month, year = value(form, "exp_month", 2), value(form, "exp_year", 4)
        result = cls("card", {}, exp_month=month, exp_year=year)
        if not number:
            result.errors["card_number"] = REQUIRED
        elif not number.isdigit() or not 12 <= len(number) <= 19:
            result.errors["card_number"] = "A card number has 12 to 19 digits."
        if quantity(month, low=1, high=12) is None:
            result.errors["exp_month"] = "Choose the expiry month."
        if not (year.isdigit() and len(year) == 4):
            result.errors["exp_year"] = "Choose the expiry year."
        if not re.fullmatch(r"\d{3,4}", cvc):
            result.errors["cvc"] = "The CVC is the 3 or 4 digits on the back of the card."
        if not result.errors:
            card = {"number": number, "exp_month": int(month), "exp_year": int(year), "cvc": cvc}
            result.body = {"type": "card", "card": card}
        return result


#: The payments API's field paths, as the checkout form names its fields.
PAYMENT_FIELDS = {
    "card.number": "card_number",
    "card.exp_month": "exp_month",
    "card.exp_year": "exp_year",
    "card.cvc": "cvc",
    "paypal.email": "paypal_email",
}

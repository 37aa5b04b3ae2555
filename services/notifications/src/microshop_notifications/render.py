"""Emails rendered from the package's Jinja2 templates: a text and an HTML part for each kind of message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from microshop_contracts import OrderConfirmed, OrderRejected, UserRegistered
from microshop_notifications.domain import Email, format_money

_ADDRESS_PARTS = ("name", "company", "line1", "line2", "postal_code", "city", "region", "country")


def one_line(text: str, limit: int = 200) -> str:
    """Header-safe: no CR/LF (header injection), whitespace collapsed, length capped."""
    return re.sub(r"\s+", " ", text).strip()[:limit]


def order_ref(order_id: str) -> str:
    """The short reference a customer reads and quotes (the id's first block, upper-case)."""
    return order_id.split("-", 1)[0].upper()


def address_lines(address: Mapping[str, Any] | Any) -> list[str]:
    """An address as printed on an envelope: one part a line, postal code and city together."""
    parts: Mapping[str, Any] = address if isinstance(address, Mapping) else address.model_dump()

    def get(key: str) -> str:
        return one_line(str(parts.get(key) or ""))

    city = " ".join(p for p in (get("postal_code"), get("city")) if p)
    lines = [get("name"), get("company"), get("line1"), get("line2"), city, get("region"), get("country")]
    lines += [get(key) for key in parts if key not in _ADDRESS_PARTS]
    return [line for line in lines if line]


class Renderer:
    """Renders emails; HTML is autoescaped (names and reasons come from customers and other services)."""

    def __init__(self, shop_url: str) -> None:
        self.shop_url = shop_url.rstrip("/")
        self.env = Environment(
            loader=PackageLoader("microshop_notifications", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def _email(self, template: str, recipient: str, subject: str, **context: Any) -> Email:
        subject = one_line(subject)
        context = {"shop_url": self.shop_url, "subject": subject, **context}
        text = self.env.get_template(f"{template}.txt").render(context)
        html = self.env.get_template(f"{template}.html").render(context)
        return Email(recipient=recipient.strip(), subject=subject, text=text, html=html)

    def order_confirmed(self, event: OrderConfirmed) -> Email:
        currency = event.currency
        lines = [
            {
                "name": line.name,
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": format_money(line.unit_price, currency),
                "amount": format_money(line.unit_price * line.quantity, currency),
            }
            for line in event.lines
        ]
        ref = order_ref(event.order_id)
        return self._email(
            "order_confirmed",
            event.email,
            f"Your microshop order {ref} is confirmed",
            name=event.name or "there",
            order_ref=ref,
            lines=lines,
            total=format_money(event.total, currency),
            address=address_lines(event.shipping_address),
            order_url=f"{self.shop_url}/orders/{event.order_id}",
        )

    def order_rejected(self, event: OrderRejected) -> Email:
        ref = order_ref(event.order_id)
        return self._email(
            "order_rejected",
            event.email,
            f"Your microshop order {ref} could not be completed",
            name=event.name or "there",
            order_ref=ref,
            reason=event.reason,
            cart_url=f"{self.shop_url}/cart",
        )

    def welcome(self, event: UserRegistered) -> Email:
        return self._email(
            "welcome", event.email, "Welcome to microshop", name=event.name or "there", email=event.email
        )

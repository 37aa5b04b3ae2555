"""Messages rendered from the package's Jinja2 templates: text and HTML parts of emails, and SMS texts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from microshop_contracts import (
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderRejected,
    OrderShipped,
    PaymentRefunded,
    UserRegistered,
)
from microshop_notifications.domain import Email, Sms, format_money

#: Two GSM-7 segments of 160 characters.
SMS_LIMIT = 320
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


@dataclass(frozen=True, slots=True)
class Notice:
    """What to tell a customer about one event, before it is put into an email or a text."""

    template: str
    subject: str
    context: dict[str, Any]


class Renderer:
    """Renders emails and texts; HTML is autoescaped (names and reasons come from customers and other services)."""

    def __init__(self, shop_url: str) -> None:
        self.shop_url = shop_url.rstrip("/")
        self.env = Environment(
            loader=PackageLoader("microshop_notifications", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # the templates ship with the package: no stat() of each file per render
        )

    def email(self, notice: Notice, recipient: str) -> Email:
        subject = one_line(notice.subject)
        context = {"shop_url": self.shop_url, "subject": subject, **notice.context}
        text = self.env.get_template(f"{notice.template}.txt").render(context)
        html = self.env.get_template(f"{notice.template}.html").render(context)
        return Email(recipient=recipient.strip(), subject=subject, text=text, html=html)

    def sms(self, notice: Notice, number: str) -> Sms:
        """One line of plain text, at most two SMS segments long."""
        text = self.env.get_template(f"sms/{notice.template}.txt").render({"shop_url": self.shop_url, **notice.context})
        return Sms(recipient=number, text=one_line(text, SMS_LIMIT))

    def _order(self, order_id: str, name: str) -> dict[str, Any]:
        return {"order_ref": order_ref(order_id), "name": name or "there", "order_url": self._order_url(order_id)}

    def _order_url(self, order_id: str) -> str:
        return f"{self.shop_url}/orders/{order_id}"

    def order_confirmed(self, event: OrderConfirmed) -> Notice:
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
        context = self._order(event.order_id, event.name)
        return Notice(
            "order_confirmed",
            f"Your microshop order {context['order_ref']} is confirmed",
            {
                **context,
                "lines": lines,
                "total": format_money(event.total, currency),
                "address": address_lines(event.shipping_address),
            },
        )

    def order_rejected(self, event: OrderRejected) -> Notice:
        context = self._order(event.order_id, event.name)
        return Notice(
            "order_rejected",
            f"Your microshop order {context['order_ref']} could not be completed",
            {**context, "reason": event.reason, "cart_url": f"{self.shop_url}/cart"},
        )

    def order_cancelled(self, event: OrderCancelled) -> Notice:
        context = self._order(event.order_id, event.name)
        refunded = format_money(event.refunded, event.currency) if event.refunded else ""
        return Notice(
            "order_cancelled",
            f"Your microshop order {context['order_ref']} is cancelled",
            {**context, "reason": event.reason, "refunded": refunded},
        )

    def order_shipped(self, event: OrderShipped) -> Notice:
        context = self._order(event.order_id, event.name)
        return Notice(
            "order_shipped",
            f"Your microshop order {context['order_ref']} has shipped",
            {**context, "carrier": event.carrier, "tracking_number": event.tracking_number},
        )

    def order_delivered(self, event: OrderDelivered) -> Notice:
        context = self._order(event.order_id, event.name)
        return Notice("order_delivered", f"Your microshop order {context['order_ref']} was delivered", context)

    def payment_refunded(self, event: PaymentRefunded, name: str) -> Notice:
        amount = format_money(event.amount, event.currency)
        context = {**self._order(event.order_id, name), "name": name, "amount": amount}
        return Notice("payment_refunded", f"Your refund of {amount} for order {context['order_ref']}", context)

    def welcome(self, event: UserRegistered) -> Notice:
        return Notice("welcome", "Welcome to microshop", {"name": event.name or "there", "email": event.email})

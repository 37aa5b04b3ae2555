"""Every event notifications consumes, over the real broker (NATS and RabbitMQ), read back from a real SMTP server.

Registration and checkouts are real (through the gateway); the order and payment events other services do not
publish yet (cancelled, shipped, delivered, refunded) are published through a real outbox onto the same broker.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from microshop_contracts import (
    Event,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderRejected,
    OrderShipped,
    PaymentRefunded,
    UserRegistered,
)

from .conftest import DECLINED_CARD, Shop
from .notifications_support import (
    BROKERS,
    EVENT_HEADER,
    NotifyPlatform,
    body,
    direct_shop,
    notify_platform,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.infra]


@pytest.fixture(scope="module", params=sorted(BROKERS))
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyPlatform]:
    with notify_platform(request.param, tmp_path_factory.mktemp(f"notify-{request.param}")) as platform:
        yield platform


def _money(minor: int) -> str:
    return f"{minor / 100:,.2f} EUR"


def _customer(env: NotifyPlatform, name: str) -> tuple[Shop, str]:
    shop = direct_shop(env.platform)
    user_id = str(shop.sign_up(name=name)["id"])
    shop.sign_in()
    return shop, user_id


def test_each_event_type_mails_the_right_customer(env: NotifyPlatform) -> None:
    shop, user_id = _customer(env, "Ada <b>Buyer</b> & Co")
    welcome = wait_for(lambda: shop_mails(env, shop.email, "Welcome"), what="the welcome email")[0]
    assert welcome["Subject"] == "Welcome to microshop"
    assert "Welcome to microshop, Ada <b>Buyer</b> & Co!" in body(welcome, "plain")
    assert "Ada &lt;b&gt;Buyer&lt;/b&gt; &amp; Co" in body(welcome, "html")

    # order.confirmed.v1 from a real checkout: its lines and total, as the order service recorded them.
    products = [p for p in shop.products(limit=50) if int(p["available"]) >= 5][:2]
    shop.fill_cart([(str(products[0]["sku"]), 2), (str(products[1]["sku"]), 1)])
    placed = shop.place_order(shop.card())
    assert placed.json()["status"] == "CONFIRMED", placed.text
    order = shop.order(placed.json()["id"])
    ref = order["id"].split("-")[0].upper()
    [confirmed] = wait_for(lambda: shop_mails(env, shop.email, "is confirmed"), what="the confirmation")
    assert confirmed["Subject"] == f"Your microshop order {ref} is confirmed"
    assert confirmed["To"] == shop.email
    text, html = body(confirmed, "plain"), body(confirmed, "html")
    for line in order["lines"]:
        unit, amount = _money(line["unit_price"]), _money(line["line_total"])
        assert f"{line['quantity']} x {line['name']} ({line['sku']}) at {unit} = {amount}" in text
        assert line["sku"] in html and amount in html
    assert f"Total: {_money(order['total'])}" in text
    assert _money(order["total"]) in html
    assert "N1 9GU London" in text

    # order.rejected.v1 from a real checkout with a declined card: why, and what to do.
    shop.fill_cart([(str(products[0]["sku"]), 1)])
    rejected_order = shop.place_order(shop.card(DECLINED_CARD)).json()
    assert rejected_order["status"] == "REJECTED", rejected_order
    [rejected] = wait_for(lambda: shop_mails(env, shop.email, "could not be completed"), what="the rejection")
    assert rejected["Subject"] == f"Your microshop order {rejected_order['id'][:8].upper()} could not be completed"
    assert "You were not charged" in body(rejected, "plain") and "You were not charged" in body(rejected, "html")

    # The events orders and payments will publish: through a real outbox onto the same broker.
    common = {"order_id": order["id"], "user_id": user_id, "email": shop.email, "name": "Ada"}
    shipped = env.publisher.publish(OrderShipped(**common, carrier="DHL", tracking_number="JD0146000033"))
    delivered = env.publisher.publish(OrderDelivered(**common))
    cancelled = env.publisher.publish(
        OrderCancelled(**common, refunded=order["total"], currency="EUR", reason="You asked us to cancel it.")
    )
    refund = PaymentRefunded(
        payment_id=str(uuid.uuid4()), order_id=order["id"], amount=order["total"], currency="EUR", user_id=user_id
    )
    refunded = env.publisher.publish(refund)  # names only the user: the address comes from the read model

    expected = {
        shipped.id: (f"Your microshop order {ref} has shipped", ["DHL", "JD0146000033"]),
        delivered.id: (f"Your microshop order {ref} was delivered", ["delivered"]),
        cancelled.id: (
            f"Your microshop order {ref} is cancelled",
            [_money(order["total"]), "You asked us to cancel it."],
        ),
        refunded.id: (f"Your refund of {_money(order['total'])} for order {ref}", ["to the payment method"]),
    }
    for event_id, (subject, phrases) in expected.items():
        mail = env.mail(event_id)
        assert mail["Subject"] == subject
        assert mail["To"] == shop.email
        assert mail["Auto-Submitted"] == "auto-generated"
        assert mail["List-Unsubscribe"] is None  # transactional mail
        assert mail["Message-ID"] and mail["Date"]
        for phrase in phrases:
            assert phrase in body(mail, "plain"), (subject, phrase)
            assert phrase in body(mail, "html"), (subject, phrase)
        assert f"/orders/{order['id']}" in body(mail, "html")


def shop_mails(env: NotifyPlatform, address: str, subject_has: str) -> list[EmailMessage]:
    return [m for m in env.sink.mails(to=address) if subject_has in str(m["Subject"])]


def test_text_from_customers_and_products_cannot_inject_markup(env: NotifyPlatform) -> None:
    event = OrderConfirmed(
        order_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        email=f"eve-{uuid.uuid4().hex[:8]}@example.com",
        name='Eve"><script>alert(1)</script>',
        lines=[OrderLine(sku="X-1", name="<img src=x onerror=alert(1)>Mug", quantity=1, unit_price=500)],
        total=500,
        currency="EUR",
        shipping_address={"name": "Eve", "line1": "<a href='https://evil.example'>1 Main St</a>", "city": "Oslo"},
    )
    mail = env.mail(env.publisher.publish(event).id)
    html, text = body(mail, "html"), body(mail, "plain")

    for markup in ("<script", "<img", "<a href='https://evil"):
        assert markup not in html
    assert "&lt;img src=x onerror=alert(1)&gt;Mug" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;a href=&#39;https://evil.example&#39;&gt;1 Main St&lt;/a&gt;" in html
    assert "<img src=x onerror=alert(1)>Mug" in text  # the text part shows it as the customer typed it


def _all_events(user_id: str, address: str) -> list[Event]:
    order = {"order_id": str(uuid.uuid4()), "user_id": user_id, "email": address, "name": "Dup"}
    return [
        UserRegistered(user_id=user_id, email=address, name="Dup"),
        OrderConfirmed(
            **order,
            lines=[OrderLine(sku="A", name="A", quantity=1, unit_price=100)],
            total=100,
            currency="EUR",
            shipping_address={"city": "Oslo"},
        ),
        OrderRejected(**order, reason="Out of stock"),
        OrderShipped(**order, carrier="UPS", tracking_number="1Z999"),
        OrderDelivered(**order),
        OrderCancelled(**order, refunded=100, currency="EUR"),
        PaymentRefunded(
            payment_id=str(uuid.uuid4()), order_id=order["order_id"], amount=100, currency="EUR", user_id=user_id
        ),
    ]


def test_every_event_delivered_twice_makes_one_email(env: NotifyPlatform) -> None:
    user_id, address = str(uuid.uuid4()), f"dup-{uuid.uuid4().hex[:8]}@example.com"
    envelopes = []
    for event in _all_events(user_id, address):
        envelope = env.publisher.publish(event)
        env.publisher.publish_again(envelope)  # the broker delivers it a second time
        envelopes.append(envelope)
        if isinstance(event, UserRegistered):
            env.mail(envelope.id)  # the read model knows the user before the refund names them

    for envelope in envelopes:
        env.mail(envelope.id)
    time.sleep(2)  # both copies of every event had time to be consumed and any second email to be sent

    mails = env.sink.mails(to=address)
    assert sorted(m[EVENT_HEADER] for m in mails) == sorted(e.id for e in envelopes)
    for envelope in envelopes:
        assert len(env.messages(envelope.id)) == 1, envelope.type


def test_sms_goes_only_to_a_customer_with_a_phone_who_opted_in(env: NotifyPlatform) -> None:
    opted_in, silent = str(uuid.uuid4()), str(uuid.uuid4())
    for user_id in (opted_in, silent):
        env.mail(env.publisher.publish(UserRegistered(user_id=user_id, email=f"{user_id}@example.com", name="S")).id)
    # What users' profile change (phone, opt-in) will tell the read model: written here directly until it does.
    env.execute(
        "UPDATE recipients SET phone = :p, sms_order_updates = 1 WHERE user_id = :u",
        {"p": "+447700900123", "u": opted_in},
    )
    env.execute("UPDATE recipients SET phone = :p WHERE user_id = :u", {"p": "+447700900999", "u": silent})

    sent = []
    for user_id in (opted_in, silent):
        event = OrderShipped(
            order_id=str(uuid.uuid4()), user_id=user_id, email=f"{user_id}@example.com", name="S",
            carrier="DHL", tracking_number="JD01460000",
        )  # fmt: skip
        envelope = env.publisher.publish(event)
        env.publisher.publish_again(envelope)
        env.mail(envelope.id)
        sent.append(envelope)

    def texts() -> list[dict[str, str]]:
        if not env.sms_file.exists():
            return []
        return [json.loads(line) for line in env.sms_file.read_text().splitlines()]

    [sms] = wait_for(texts, what="the text message")
    time.sleep(1)
    assert texts() == [sms]
    assert sms["to"] == "+447700900123"
    assert f"order {sent[0].data['order_id'][:8].upper()} shipped with DHL, tracking JD01460000" in sms["text"]
    assert [row["channel"] for row in env.messages(sent[0].id)] == ["email", "sms"]
    assert [row["channel"] for row in env.messages(sent[1].id)] == ["email"]

"""Notifications through outages, over the real broker (NATS and RabbitMQ): the service itself down during
checkouts, the SMTP server down, a permanent refusal (dead letter, then a retry by command), users down."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from microshop_contracts import OrderConfirmed, OrderLine, OrderShipped, PaymentRefunded

from .notifications_support import (
    BROKERS,
    EVENT_HEADER,
    NotifyPlatform,
    direct_shop,
    notify_platform,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.infra]


@pytest.fixture(scope="module", params=sorted(BROKERS))
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyPlatform]:
    with notify_platform(request.param, tmp_path_factory.mktemp(f"notify-faults-{request.param}")) as platform:
        yield platform


def _row(env: NotifyPlatform, event_id: str) -> dict[str, Any] | None:
    rows = env.messages(event_id)
    return rows[0] if rows else None


def test_notifications_down_during_checkouts_then_each_email_once(env: NotifyPlatform) -> None:
    env.platform.kill("notifications", sig=signal.SIGKILL)
    shop = direct_shop(env.platform)
    shop.sign_up()
    shop.sign_in()
    sku = next(str(p["sku"]) for p in shop.products(limit=50) if int(p["available"]) >= 10)
    orders = []
    for _ in range(4):  # an outage of notifications never blocks a checkout
        shop.fill_cart([(sku, 1)])
        placed = shop.place_order(shop.card())
        assert placed.json()["status"] == "CONFIRMED", placed.text
        orders.append(placed.json()["id"])
    assert env.sink.mails(to=shop.email) == []  # the welcome waits too
    env.platform.restart("notifications")

    def confirmations() -> list[str]:
        return [str(m["Subject"]) for m in env.sink.mails(to=shop.email) if "is confirmed" in str(m["Subject"])]

    wait_for(lambda: len(confirmations()) >= len(orders), what="every confirmation")
    time.sleep(2)  # redeliveries after the restart had time to make a second email
    subjects = confirmations()
    for order_id in orders:
        assert sum(order_id[:8].upper() in subject for subject in subjects) == 1, subjects
    assert len(subjects) == len(orders)
    assert len([m for m in env.sink.mails(to=shop.email) if "Welcome" in str(m["Subject"])]) == 1


def test_smtp_down_is_retried_and_the_email_arrives_once_it_is_back(env: NotifyPlatform) -> None:
    address = f"wait-{uuid.uuid4().hex[:8]}@example.com"
    event = OrderShipped(
        order_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), email=address, name="W", carrier="DHL",
        tracking_number="JD0001",
    )  # fmt: skip
    env.sink.stop()
    try:
        envelope = env.publisher.publish(event)

        def retried() -> dict[str, Any] | None:
            row = _row(env, envelope.id)
            return row if row and row["status"] == "failed" and row["attempts"] >= 2 else None

        row = wait_for(retried, what="two failed attempts")
        assert "Connect" in row["last_error"] or "refused" in row["last_error"], row["last_error"]
    finally:
        env.sink.start()

    mail = env.mail(envelope.id)
    time.sleep(1.5)
    assert len(env.sink.mails(event_id=envelope.id)) == 1
    assert mail["To"] == address
    row = wait_for(lambda: _row(env, envelope.id) if _row(env, envelope.id)["status"] == "sent" else None)
    assert row["last_error"] is None and row["sent_at"] is not None


def _admin_headers(env: NotifyPlatform) -> dict[str, str]:
    admin = direct_shop(env.platform)
    created = env.platform.run_cli(
        "users", "admin", "create", "--email", admin.email, "--name", "Root", "--password", admin.password, check=False
    )
    assert created.returncode == 0, created.stdout + created.stderr
    admin.sign_in()
    return admin.auth


def test_a_permanent_refusal_is_a_dead_letter_until_an_admin_retries_it(env: NotifyPlatform) -> None:
    env.sink.refuse["refused.example"] = "550 5.1.1 No such user here"
    address = f"gone-{uuid.uuid4().hex[:8]}@refused.example"
    event = OrderConfirmed(
        order_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), email=address, name="G",
        lines=[OrderLine(sku="A", name="A", quantity=1, unit_price=100)], total=100, currency="EUR",
        shipping_address={"city": "Oslo"},
    )  # fmt: skip
    envelope = env.publisher.publish(event)
    row = wait_for(lambda: (r := _row(env, envelope.id)) and r["status"] == "dead" and r, what="a dead message")
    time.sleep(3)  # several retry periods: a permanent refusal is never tried again
    assert env.sink.rcpt_attempts[address] == 1
    assert _row(env, envelope.id)["attempts"] == 1

    url = f"{env.platform.url('notifications')}/api/v1/notifications/dead-letters"
    admin = _admin_headers(env)
    listed = httpx.get(url, headers=admin, timeout=10)
    customer = direct_shop(env.platform)
    customer.sign_up()
    customer.sign_in()
    refused = httpx.get(url, headers=customer.auth, timeout=10)
    assert listed.status_code == 200, listed.text
    [dead] = [item for item in listed.json()["messages"] if item["event_id"] == envelope.id]
    assert dead["id"] == row["id"] and dead["recipient"] == address and dead["channel"] == "email"
    assert "550" in dead["error"] and dead["attempts"] == 1
    assert refused.status_code == 403

    env.sink.refuse.clear()  # the address was fixed on the mail server's side
    retried = env.platform.run_cli("notifications", "retry-dead-letters", "--message", row["id"], check=False)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "re-queued 1 message" in retried.stdout
    mail = env.mail(envelope.id)
    time.sleep(1)
    assert mail[EVENT_HEADER] == envelope.id
    assert len(env.sink.mails(event_id=envelope.id)) == 1
    after = httpx.get(url, headers=admin, timeout=10).json()
    assert envelope.id not in [item["event_id"] for item in after["messages"]]


def test_a_users_outage_delays_a_refund_email_but_never_loses_it(env: NotifyPlatform) -> None:
    shop = direct_shop(env.platform)
    user_id = str(shop.sign_up()["id"])
    wait_for(lambda: env.sink.mails(to=shop.email), what="the welcome")
    # As for an account older than notifications' read model: only users knows its address.
    env.execute("DELETE FROM recipients WHERE user_id = :u", {"u": user_id})
    env.platform.kill("users", sig=signal.SIGKILL)
    try:
        refund = PaymentRefunded(
            payment_id=str(uuid.uuid4()), order_id=str(uuid.uuid4()), amount=1999, currency="EUR", user_id=user_id
        )
        envelope = env.publisher.publish(refund)

        def waiting() -> dict[str, Any] | None:
            row = _row(env, envelope.id)
            return row if row and row["deferrals"] >= 2 and row["status"] == "failed" else None

        row = wait_for(waiting, what="lookups that wait for users")
        assert row["attempts"] == 0 and row["recipient"] == ""
        assert "recipient lookup" in row["last_error"]
    finally:
        env.platform.restart("users")

    mail = env.mail(envelope.id, timeout=60)
    assert mail["To"] == shop.email
    assert mail["Subject"].startswith("Your refund of 19.99 EUR")
    row = wait_for(lambda: (r := _row(env, envelope.id)) and r["status"] == "sent" and r, what="sent")
    assert row["attempts"] == 1 and row["recipient"] == shop.email

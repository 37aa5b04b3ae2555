"""Events in, real emails out: each test reads what a real SMTP server (aiosmtpd on loopback) received."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from microshop_contracts import Envelope, OrderRejected, UserRegistered
from microshop_notifications.mailer import EVENT_HEADER

if TYPE_CHECKING:
    from conftest import Service, SmtpInbox, Tools


async def _sent(service: Service, event_id: str) -> bool:
    return (await service.status(event_id)) == "sent"


async def test_order_confirmed_sends_one_email_with_lines_total_and_address(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    event = tools.order_confirmed()
    envelope = Envelope.wrap(event, source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))

    [mail] = inbox.messages
    ref = event.order_id.split("-")[0].upper()
    assert mail["Subject"] == f"Your microshop order {ref} is confirmed"
    assert mail["To"] == "ada@example.com"
    assert inbox.envelopes == [("shop@microshop.local", ["ada@example.com"])]
    assert mail["From"] == "microshop <shop@microshop.local>"
    assert mail[EVENT_HEADER] == envelope.id
    assert mail["Message-ID"].endswith("@microshop.local>")
    assert parsedate_to_datetime(mail["Date"]).tzinfo is not None
    assert mail.get_content_type() == "multipart/alternative"
    text = tools.body(mail, "plain")
    html = tools.body(mail, "html")
    assert "2 x Mug <Blue> & Co (MUG-BLUE) at 12.50 EUR = 25.00 EUR" in text
    assert "1 x T-shirt (TEE-9) at 1,999.99 EUR = 1,999.99 EUR" in text
    assert "Total: 2,024.99 EUR" in text
    assert "SW1Y 4JH London" in text
    assert f"/orders/{event.order_id}" in text
    # The HTML part is autoescaped: a product name cannot inject markup.
    assert "Mug &lt;Blue&gt; &amp; Co" in html
    assert "<Blue>" not in html
    assert "2,024.99 EUR" in html
    assert "12 St James&#39;s Square" in html


async def test_the_same_event_delivered_twice_makes_one_email(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))
        await asyncio.sleep(0.3)  # several sender passes: nothing else goes out
        rows = await service.messages()

    assert len(rows) == 1
    assert len(inbox.messages) == 1


async def test_a_duplicate_the_inbox_missed_still_makes_one_message(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    # Two consumer names (e.g. a renamed consumer) each have an inbox row; UNIQUE(event_id, channel) holds.
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        handler = service.kit.bus.handlers[envelope.type] if service.kit.bus else None
        assert handler is not None
        for _ in range(2):
            async with service.kit.database.transaction() as tx:
                await handler(tx, envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))
        await asyncio.sleep(0.2)
        assert len(await service.messages()) == 1

    assert len(inbox.messages) == 1


async def test_smtp_down_at_first_then_up_delivers_once_after_a_retry(tools: Tools) -> None:
    inbox, port = tools.SmtpInbox(), tools.free_port()
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(port)) as service:
        await service.deliver(envelope)

        async def failed_once() -> bool:
            row = await service.message(envelope.id)
            return bool(row["status"] == "failed" and row["attempts"] >= 1)

        await tools.eventually(failed_once)
        row = await service.message(envelope.id)
        assert "Connect" in row["last_error"] or "refused" in row["last_error"]
        async with tools.smtp_server(inbox, port):
            await tools.eventually(lambda: _sent(service, envelope.id))
            await asyncio.sleep(0.3)
        row = await service.message(envelope.id)

    assert len(inbox.messages) == 1
    assert inbox.messages[0][EVENT_HEADER] == envelope.id
    assert row["attempts"] >= 2
    assert row["last_error"] is None
    assert row["sent_at"] is not None


async def test_a_4xx_reply_is_retried(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    inbox.refuse_rcpt = ["451 4.3.0 Mailbox busy, try again later"]
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))
        row = await service.message(envelope.id)

    assert row["attempts"] == 2
    assert len(inbox.messages) == 1


async def test_a_550_reply_makes_the_message_dead_without_retrying(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    inbox.always_refuse = "550 5.1.1 No such user here"
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)

        async def dead() -> bool:
            return await service.status(envelope.id) == "dead"

        await tools.eventually(dead)
        await asyncio.sleep(0.5)  # ten poll intervals: a dead message is never tried again
        row = await service.message(envelope.id)

    assert inbox.rcpt_attempts == 1
    assert row["attempts"] == 1
    assert "550" in row["last_error"]
    assert inbox.messages == []


async def test_a_5xx_refusal_of_the_content_is_dead_at_once(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    inbox.data_reply = "554 5.6.0 Message rejected as spam"
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)

        async def dead() -> bool:
            return await service.status(envelope.id) == "dead"

        await tools.eventually(dead)
        await asyncio.sleep(0.3)
        row = await service.message(envelope.id)

    assert row["attempts"] == 1
    assert "554" in row["last_error"]
    assert inbox.rcpt_attempts == 1


async def test_two_instances_send_each_message_exactly_once(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    inbox.data_delay = 0.005  # sends overlap, so both senders are busy claiming at the same time
    settings = tools.settings(smtp_port, send_batch=3)  # one database (SQLite file or PostgreSQL) for both
    envelopes = [Envelope.wrap(tools.order_confirmed(f"user-{n}"), source="orders") for n in range(30)]
    async with tools.running(settings) as first, tools.running(settings) as second:
        for n, envelope in enumerate(envelopes):
            await (first if n % 2 else second).deliver(envelope)

        async def all_sent() -> bool:
            return all(row["status"] == "sent" for row in await first.messages())

        await tools.eventually(all_sent, within=15)
        await asyncio.sleep(0.3)
        rows = await first.messages()

    assert len(rows) == 30
    assert all(row["attempts"] == 1 for row in rows)
    sent_ids = sorted(mail[EVENT_HEADER] for mail in inbox.messages)
    assert sent_ids == sorted(envelope.id for envelope in envelopes)


async def test_a_message_is_dead_after_the_configured_attempts(tools: Tools) -> None:
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    settings = tools.settings(tools.free_port(), send_max_attempts=3, send_backoff_base=0.01)
    async with tools.running(settings) as service:
        await service.deliver(envelope)

        async def dead() -> bool:
            return await service.status(envelope.id) == "dead"

        await tools.eventually(dead)
        await asyncio.sleep(0.3)
        row = await service.message(envelope.id)

    assert row["attempts"] == 3
    assert row["sent_at"] is None


async def test_the_sender_is_woken_by_the_commit_not_the_poll(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    async with tools.running(tools.settings(smtp_port, send_poll_interval=30.0)) as service:
        await asyncio.sleep(0.1)  # the sender's first pass is done; it now waits up to 30 s
        started = time.monotonic()
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id), within=3)
        elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert len(inbox.messages) == 1


async def test_order_rejected_says_why_and_what_to_do(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    event = OrderRejected(
        order_id="0badc0de-0000-4000-8000-000000000000",
        user_id="user-bob",
        email="bob@example.com",
        name="Bob",
        reason="Your card was declined (insufficient funds).",
    )
    envelope = Envelope.wrap(event, source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))

    [mail] = inbox.messages
    assert mail["Subject"] == "Your microshop order 0BADC0DE could not be completed"
    assert mail["To"] == "bob@example.com"
    text = tools.body(mail, "plain")
    html = tools.body(mail, "html")
    for part in (text, html):
        assert "Your card was declined (insufficient funds)." in part
        assert "You were not charged" in part
        assert "still in your cart" in part


async def test_user_registered_sends_a_welcome(tools: Tools, inbox: SmtpInbox, smtp_port: int) -> None:
    event = UserRegistered(user_id="user-eve", email="eve@example.com", name="Eve <script>alert(1)</script>")
    envelope = Envelope.wrap(event, source="users")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent(service, envelope.id))
        row = await service.message(envelope.id)

    [mail] = inbox.messages
    assert mail["Subject"] == "Welcome to microshop"
    assert mail["To"] == "eve@example.com"
    assert "Welcome to microshop, Eve <script>" in tools.body(mail, "plain")
    html = tools.body(mail, "html")
    assert "<script>" not in html
    assert "Eve &lt;script&gt;" in html
    assert row["user_id"] == "user-eve"
    assert row["channel"] == "email"


async def test_an_event_without_an_address_is_kept_as_dead_and_never_sent(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    event = OrderRejected(order_id="o-1", user_id="user-x", email="", name="", reason="Unknown customer")
    envelope = Envelope.wrap(event, source="orders")
    async with tools.running(tools.settings(smtp_port)) as service:
        await service.deliver(envelope)
        await asyncio.sleep(0.3)
        row = await service.message(envelope.id)

    assert row["status"] == "dead"
    assert row["attempts"] == 0
    assert row["last_error"] == "The event carries no email address"
    assert inbox.rcpt_attempts == 0


async def test_messages_recorded_while_the_service_was_down_are_sent_at_start(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    settings = tools.settings(smtp_port)
    async with tools.running(settings) as first:
        first.app.state.sender_task.cancel()  # the process "dies" before its sender runs
        await asyncio.wait([first.app.state.sender_task], timeout=5)
        await first.deliver(envelope)
    async with tools.running(settings) as second:
        await tools.eventually(lambda: _sent(second, envelope.id))

    assert len(inbox.messages) == 1


async def test_a_message_in_flight_at_shutdown_is_finished_and_not_sent_again(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    inbox.data_delay = 0.3
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    settings = tools.settings(smtp_port)
    async with tools.running(settings) as first:
        await first.deliver(envelope)

        async def in_flight() -> bool:
            return inbox.rcpt_attempts == 1

        await tools.eventually(in_flight)
    # The service has stopped; it waited for the SMTP server's answer before closing its database.
    inbox.data_delay = 0
    async with tools.running(settings) as second:
        row = await second.message(envelope.id)
        await asyncio.sleep(0.3)

    assert row["status"] == "sent"
    assert len(inbox.messages) == 1


async def test_a_message_whose_attempts_never_finished_is_given_up(
    tools: Tools, inbox: SmtpInbox, smtp_port: int
) -> None:
    envelope = Envelope.wrap(tools.order_confirmed(), source="orders")
    settings = tools.settings(smtp_port, send_max_attempts=3)
    async with tools.running(settings) as first:
        first.app.state.sender_task.cancel()
        await asyncio.wait([first.app.state.sender_task], timeout=5)
        await first.deliver(envelope)
        # As if three senders had each claimed it and crashed before recording an outcome.
        await first.kit.database.execute("UPDATE messages SET attempts = 3 WHERE event_id = :e", {"e": envelope.id})
    async with tools.running(settings) as second:

        async def dead() -> bool:
            return await second.status(envelope.id) == "dead"

        await tools.eventually(dead)
        row = await second.message(envelope.id)

    assert "never finished" in row["last_error"]
    assert inbox.rcpt_attempts == 0


async def test_readiness_reports_the_sender_loop(tools: Tools) -> None:
    async with tools.running(tools.settings(tools.free_port())) as service:
        ready = await service.client.get("/readyz")
        sender = service.app.state.sender_task
        sender.cancel()
        await asyncio.wait([sender], timeout=5)  # it may be inside a database call (PostgreSQL) when cancelled
        unready = await service.client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["checks"]["email_sender"] == "ok"
    assert unready.status_code == 503

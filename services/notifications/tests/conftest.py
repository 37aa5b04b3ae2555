"""Fixtures of the notifications tests: a real SMTP server (aiosmtpd) on loopback and the service app."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from fastapi import FastAPI

from microshop_contracts import Envelope, Event, OrderConfirmed, OrderLine
from microshop_kit.app import Kit
from microshop_kit.bus import Delivery, InboxConsumer
from microshop_kit.ports import free_port
from microshop_kit.testing import JwtIssuer, jwks_server, postgres_database, running_app
from microshop_notifications import NotificationsSettings, create_app


class SmtpInbox:
    """An aiosmtpd handler that keeps every accepted message; ``refuse_rcpt`` scripts refusals."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: Replies to give to RCPT TO, one per attempt, before accepting (e.g. ["451 4.3.0 try later"]).
        self.refuse_rcpt: list[str] = []
        self.always_refuse: str | None = None
        self.rcpt_attempts = 0
        #: Seconds the server takes to accept DATA (a slow server).
        self.data_delay = 0.0
        #: A refusal of the message content, given to every DATA (e.g. "554 5.6.0 rejected").
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        self.rcpt_attempts += 1
        if self.always_refuse:
            return self.always_refuse
        if self.refuse_rcpt:
            return self.refuse_rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK queued"


def body(mail: EmailMessage, subtype: str) -> str:
    """The text of the ``text/<subtype>`` part."""
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_subtype() == subtype, f"no text/{subtype} part"
    return str(part.get_content())


@contextlib.asynccontextmanager
async def smtp_server(inbox: SmtpInbox, port: int = 0) -> AsyncIterator[int]:
    """A real SMTP server on 127.0.0.1 on the running loop; yields its port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="test.smtp"), "127.0.0.1", port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s; last value: {value!r}")
        await asyncio.sleep(0.01)


@pytest.fixture
def inbox() -> SmtpInbox:
    return SmtpInbox()


@pytest.fixture
def issuer() -> JwtIssuer:
    return JwtIssuer()


@pytest.fixture
async def jwks_url(issuer: JwtIssuer) -> AsyncIterator[str]:
    async with jwks_server(issuer) as url:
        yield url


class FakeDelivery(Delivery):
    """A broker delivery we own: records how the kit's consumer settled it."""

    def __init__(self, envelope: Envelope, deliveries: int = 1) -> None:
        super().__init__(
            envelope.model_dump_json().encode(),
            event_type=envelope.type,
            message_id=envelope.id,
            deliveries=deliveries,
        )
        self.acked = False
        self.retries: list[float] = []

    async def ack(self) -> None:
        self.acked = True

    async def retry(self, delay: float) -> None:
        self.retries.append(delay)


class Service:
    """The notifications app running in-process, fed events through the kit's inbox consumer."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        kit: Kit = app.state.kit
        assert kit.bus is not None
        self.kit = kit
        # The handlers the service registered with its bus, run by the kit's consumer (inbox, dedup, retry).
        self.consumer = InboxConsumer(kit.database, kit.bus.consumer, kit.bus.handlers)

    async def deliver(self, event: Event | Envelope) -> FakeDelivery:
        envelope = event if isinstance(event, Envelope) else Envelope.wrap(event, source="test")
        delivery = FakeDelivery(envelope)
        await self.consumer.handle(delivery)
        assert delivery.acked, f"the kit did not ack {envelope.type}: retries {delivery.retries}"
        return delivery

    async def messages(self, event_id: str | None = None) -> list[dict[str, Any]]:
        if event_id is None:
            rows = await self.kit.database.fetch("SELECT * FROM messages ORDER BY created_at")
        else:
            rows = await self.kit.database.fetch("SELECT * FROM messages WHERE event_id = :e", {"e": event_id})
        return [dict(row) for row in rows]

    async def message(self, event_id: str) -> dict[str, Any]:
        [row] = await self.messages(event_id)
        return row

    async def status(self, event_id: str) -> str:
        return str((await self.message(event_id))["status"])


@contextlib.asynccontextmanager
async def running_service(settings: NotificationsSettings) -> AsyncIterator[Service]:
    app = create_app(settings)
    async with running_app(app) as client:
        yield Service(app, client)


def order_confirmed(user_id: str = "user-ada", email_address: str = "ada@example.com") -> OrderConfirmed:
    return OrderConfirmed(
        order_id=str(uuid.uuid4()),
        user_id=user_id,
        email=email_address,
        name="Ada Lovelace",
        lines=[
            OrderLine(sku="MUG-BLUE", name="Mug <Blue> & Co", quantity=2, unit_price=1250),
            OrderLine(sku="TEE-9", name="T-shirt", quantity=1, unit_price=199999),
        ],
        total=2 * 1250 + 199999,
        currency="EUR",
        shipping_address={
            "name": "Ada Lovelace",
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
    )


class Tools:
    """What the tests of this folder share (reached through the ``tools`` fixture: tests import no conftest)."""

    SmtpInbox = SmtpInbox
    free_port = staticmethod(free_port)
    smtp_server = staticmethod(smtp_server)
    eventually = staticmethod(eventually)
    body = staticmethod(body)
    running = staticmethod(running_service)
    order_confirmed = staticmethod(order_confirmed)

    def __init__(self, data_dir: Path, jwks_url: str, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.jwks_url = jwks_url
        self.database_url = database_url

    def settings(self, smtp_port: int, **overrides: Any) -> NotificationsSettings:
        """Settings for one test: its own database, the test JWKS, no broker, quick retries."""
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "jwks_url": self.jwks_url,
            "broker_url": None,
            "smtp_port": smtp_port,
            "send_backoff_base": 0.05,
            "send_backoff_max": 0.2,
            "send_poll_interval": 0.05,
            "log_json": False,
        }
        return NotificationsSettings(**{**values, **overrides})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.infra)])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """Each test runs on SQLite (a file in tmp_path) and on a fresh PostgreSQL database dropped after it.

    PostgreSQL is skipped when the server is not reachable, unless CI=true (then the test fails).
    """
    if request.param == "sqlite":
        yield None
        return
    async with postgres_database("notifications") as url:
        yield url


@pytest.fixture
def tools(tmp_path: Path, jwks_url: str, database_url: str | None) -> Tools:
    return Tools(tmp_path, jwks_url, database_url)


@pytest.fixture
async def smtp_port(inbox: SmtpInbox) -> AsyncIterator[int]:
    """A real SMTP server for the test, keeping what it receives in ``inbox``."""
    async with smtp_server(inbox) as port:
        yield port

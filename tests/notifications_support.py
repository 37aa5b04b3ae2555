"""What the notifications end-to-end tests share: the platform on a real broker with an SMTP server the test
controls, a publisher writing events through a real outbox onto the platform's broker, and read-backs."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from microshop_contracts import Envelope as EventEnvelope
from microshop_contracts import Event
from microshop_kit import db as dbmod
from microshop_kit.bus import EventBus
from microshop_kit.ports import free_port
from microshop_kit.settings import ServiceSettings
from microshop_kit.testing import require_server
from microshop_launcher import Platform, PlatformConfig

from .conftest import NATS_URL, RABBITMQ_URL, Shop

T = TypeVar("T")
BROKERS = {"nats": NATS_URL, "rabbitmq": RABBITMQ_URL}
EVENT_HEADER = "X-Microshop-Event-Id"


class Background:
    """An event loop in a thread, for the async parts (the publisher's bus, database reads) of sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a fixed port that the test can stop, start again, and make refuse
    the recipients of chosen domains with a permanent 5xx."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        #: RCPT TO attempts per address (accepted or refused).
        self.rcpt_attempts: dict[str, int] = {}
        #: Domain -> reply for RCPT TO, e.g. {"refused.example": "550 5.1.1 No such user"}.
        self.refuse: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
        refusal = self.refuse.get(address.rpartition("@")[2])
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 OK queued"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def mails(self, *, to: str | None = None, event_id: str | None = None) -> list[EmailMessage]:
        with self._lock:
            found = list(self.messages)
        if to is not None:
            found = [m for m in found if str(m["To"]).lower() == to.lower()]
        if event_id is not None:
            found = [m for m in found if m[EVENT_HEADER] == event_id]
        return found


def body(mail: EmailMessage, subtype: str) -> str:
    """The text of the ``text/<subtype>`` part."""
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_subtype() == subtype, f"no text/{subtype} part"
    return str(part.get_content())


def wait_for(check: Callable[[], T], *, timeout: float = 30, what: str = "the condition") -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s; last value: {value!r}")
        time.sleep(0.1)


class Publisher:
    """Another service's outbox (its own SQLite file) publishing onto the platform's broker and namespace,
    the way orders, payments and users publish."""

    def __init__(self, background: Background, broker_url: str, namespace: str, folder: Path) -> None:
        self.background = background
        self.settings = ServiceSettings(
            service_name="publisher", broker_url=broker_url, bus_namespace=namespace, data_dir=folder
        )
        self.bus: EventBus | None = None
        self.database: dbmod.Database | None = None
        background.run(self._open())

    async def _open(self) -> None:
        self.database = await dbmod.connect(self.settings.resolved_database_url())
        empty = self.settings.data_dir / "no-migrations"
        empty.mkdir(parents=True, exist_ok=True)
        await self.database.migrate("publisher", empty)  # the kit's outbox and inbox only
        self.bus = EventBus(self.settings, self.database)
        await self.bus.start()
        async with asyncio.timeout(30):
            await self.bus.wait_ready()

    def publish(self, event: Event) -> EventEnvelope:
        """Through the outbox: committed, then published by the relay with the event id as dedup id."""

        async def add() -> EventEnvelope:
            assert self.bus is not None
            async with self.bus.outbox.db.transaction() as tx:
                return await self.bus.outbox.add(tx, event)

        return self.background.run(add())

    def publish_again(self, envelope: EventEnvelope) -> None:
        """The same event as a second broker message (another dedup id): what a redelivery looks like."""

        async def publish() -> None:
            assert self.bus is not None and self.bus.broker is not None
            body = envelope.model_dump_json().encode()
            await self.bus.broker.publish(envelope.type, body, dedup_id=f"{envelope.id}-again-{uuid.uuid4().hex}")

        self.background.run(publish())

    def close(self) -> None:
        async def close() -> None:
            if self.bus is not None:
                await self.bus.close()
            if self.database is not None:
                await self.database.close()

        self.background.run(close())


@dataclass
class NotifyPlatform:
    """The platform under test and the tools around it."""

    platform: Platform
    sink: SmtpSink
    background: Background
    publisher: Publisher

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of the notifications service's own database."""

        async def fetch() -> list[dict[str, Any]]:
            database = await self.platform.open_database("notifications")
            try:
                return [dict(row) for row in await database.fetch(sql, params)]
            finally:
                await database.close()

        return self.background.run(fetch())

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        async def execute() -> int:
            database = await self.platform.open_database("notifications")
            try:
                return await database.execute(sql, params)
            finally:
                await database.close()

        return self.background.run(execute())

    def messages(self, event_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM messages WHERE event_id = :e ORDER BY channel", {"e": event_id})

    def mail(self, event_id: str, *, timeout: float = 30) -> EmailMessage:
        """The one email sent for an event (waits for it)."""
        [mail] = wait_for(lambda: self.sink.mails(event_id=event_id), timeout=timeout, what=f"email for {event_id}")
        return mail

    @property
    def sms_file(self) -> Path:
        return self.platform.root / "notifications" / "sms.jsonl"


#: Which service answers a public path (the gateway's route table, for the paths these tests use).
_ROUTES = (
    ("/api/v1/users", "users"),
    ("/api/v1/auth", "users"),
    ("/api/v1/products", "products"),
    ("/api/v1/availability", "products"),
    ("/api/v1/cart", "orders"),
    ("/api/v1/orders", "orders"),
    ("/api/v1/payment-methods", "payments"),
    ("/api/v1/notifications", "notifications"),
)


def direct_shop(platform: Platform) -> Shop:
    """A customer speaking to each service directly rather than through the gateway (whose proxy is
    tested on its own), so these tests exercise notifications and its producers only."""
    shop = Shop(platform)

    def route(request: httpx.Request) -> None:
        service = next(name for prefix, name in _ROUTES if request.url.path.startswith(prefix))
        request.url = request.url.copy_with(port=platform.port(service))

    shop.http.close()
    shop.http = httpx.Client(base_url=platform.url("users"), timeout=30, event_hooks={"request": [route]})
    return shop


#: Quick retries, so a test sees several attempts in a few seconds.
NOTIFICATIONS_ENV = {
    "NOTIFICATIONS_SEND_BACKOFF_BASE": "0.3",
    "NOTIFICATIONS_SEND_BACKOFF_MAX": "1.0",
    "NOTIFICATIONS_SEND_MAX_ATTEMPTS": "8",
    "NOTIFICATIONS_SEND_POLL_INTERVAL": "0.2",
}


@contextlib.contextmanager
def notify_platform(broker: str, root: Path) -> Iterator[NotifyPlatform]:
    """The whole platform on SQLite and the system's NATS or RabbitMQ, notifications mailing the test's sink."""
    url = BROKERS[broker]
    host_port = url.split("@")[-1].split("//")[-1].rstrip("/")
    host, _, port = host_port.partition(":")
    require_server(host, int(port), broker)
    sink = SmtpSink()
    sink.start()
    namespace = f"t{uuid.uuid4().hex[:10]}"
    env = {**NOTIFICATIONS_ENV, "NOTIFICATIONS_SMTP_PORT": str(sink.port)}
    config = PlatformConfig.isolated(root, broker_url=url, namespace=namespace, extra_env=env)
    platform = Platform(config)
    background = Background()
    publisher: Publisher | None = None
    try:
        platform.start(timeout=120)
        seeded = platform.run_cli("products", "seed", check=False)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        publisher = Publisher(background, url, namespace, root / "publisher")
        yield NotifyPlatform(platform, sink, background, publisher)
    finally:
        if publisher is not None:
            publisher.close()
        background.close()
        platform.stop()
        platform.purge_broker()
        sink.stop()

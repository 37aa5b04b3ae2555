"""Over the real NATS JetStream broker: an event published through an outbox reaches the SMTP server once.

Needs nats-server at 127.0.0.1:4222 (skipped when absent, failed under CI=true); each test uses its own
bus namespace, so it shares the server with anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from nats.js import JetStreamContext

from microshop_contracts import Envelope, UserRegistered
from microshop_kit import db as dbmod
from microshop_kit.bus import EventBus
from microshop_kit.bus.nats_broker import NatsBroker
from microshop_kit.settings import ServiceSettings
from microshop_kit.testing import require_server

if TYPE_CHECKING:
    from conftest import Service, SmtpInbox, Tools

NATS_URL = "nats://127.0.0.1:4222"
pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]


@pytest.fixture
def namespace() -> str:
    require_server("127.0.0.1", 4222, "NATS (JetStream)")
    return f"t{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def publisher(tmp_path: Path, namespace: str) -> AsyncIterator[EventBus]:
    """Another service's bus (its own database and outbox) publishing on the test namespace."""
    settings = ServiceSettings(
        service_name="orders", broker_url=NATS_URL, bus_namespace=namespace, data_dir=tmp_path / "publisher"
    )
    database = await dbmod.connect(settings.resolved_database_url())
    empty = tmp_path / "no-migrations"
    empty.mkdir()
    await database.migrate("publisher", empty)  # the kit's outbox and inbox tables only
    bus = EventBus(settings, database)
    await bus.start()
    try:
        async with asyncio.timeout(10):
            await bus.wait_ready()
        yield bus
    finally:
        if isinstance(bus.broker, NatsBroker) and bus.broker.connected:
            await bus.broker.delete_stream()
        await bus.close()
        await database.close()


@contextlib.asynccontextmanager
async def _jetstream() -> AsyncIterator[JetStreamContext]:
    """A connection of the test's own, to read the consumer's state on the server."""
    client = await nats.connect(NATS_URL)
    try:
        yield client.jetstream()
    finally:
        await client.close()


async def _sent_count(service: Service) -> int:
    return sum(row["status"] == "sent" for row in await service.messages())


async def test_an_event_published_on_nats_is_emailed_once_even_when_delivered_twice(
    tools: Tools, tmp_path: Path, namespace: str, inbox: SmtpInbox, smtp_port: int
) -> None:
    settings = tools.settings(smtp_port, broker_url=NATS_URL, bus_namespace=namespace)
    async with tools.running(settings) as service, publisher(tmp_path, namespace) as bus:
        assert service.kit.bus is not None
        async with asyncio.timeout(10):
            await service.kit.bus.wait_ready()
        event = UserRegistered(user_id="user-nats", email="nats@example.com", name="Nat")
        async with bus.outbox.db.transaction() as tx:
            envelope: Envelope = await bus.outbox.add(tx, event)
        await tools.eventually(lambda: _sent_count(service), within=15)
        # The same event again under another broker message id: JetStream keeps both, the inbox dedupes.
        assert bus.broker is not None
        await bus.broker.publish(envelope.type, envelope.model_dump_json().encode(), dedup_id=f"{envelope.id}-again")

        async with _jetstream() as js:
            consumer = service.kit.bus.broker
            assert isinstance(consumer, NatsBroker)
            durable = consumer.durable_name(service.kit.bus.consumer, envelope.type)

            async def both_handled() -> bool:
                info = await js.consumer_info(consumer.stream, durable)
                return bool(info.delivered.stream_seq == 2 and info.num_pending == 0 and info.num_ack_pending == 0)

            await tools.eventually(both_handled, within=10)
        await asyncio.sleep(0.3)  # a sender pass after the duplicate: nothing more goes out
        rows = await service.messages()

    assert len(rows) == 1
    assert rows[0]["event_id"] == envelope.id
    [mail] = inbox.messages
    assert mail["To"] == "nats@example.com"
    assert mail["X-Microshop-Event-Id"] == envelope.id

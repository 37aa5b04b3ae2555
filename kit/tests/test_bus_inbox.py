"""The bus's own rules, with fakes instead of a broker: inbox, settling, dead letters, relay order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from microshop_contracts import Envelope, Event, UserDeleted
from microshop_kit.bus import BusOptions, EventBus, Handler, InboxConsumer, Outbox, Relay, RetryPolicy
from microshop_kit.bus.broker import Broker, Delivery, DeliveryHandler
from microshop_kit.db import Database, SqliteDatabase, Tx
from microshop_kit.errors import BusError, ConfigError, DatabaseUnavailable
from microshop_kit.settings import ServiceSettings

MIGRATION = "CREATE TABLE effects (event_id TEXT NOT NULL);\n"


class FakeDelivery(Delivery):
    """Records how it was settled, and whether the handler's effect was committed when it was acked."""

    def __init__(self, db: Database, body: bytes, *, deliveries: int = 1, message_id: str | None = "m-1") -> None:
        super().__init__(body, event_type=UserDeleted.TYPE, message_id=message_id, deliveries=deliveries)
        self.db = db
        self.settled: list[str] = []
        self.committed_at_ack: int | None = None

    async def ack(self) -> None:
        self.committed_at_ack = await self.db.fetchval("SELECT count(*) FROM effects")  # another connection
        self.settled.append("ack")

    async def retry(self, delay: float) -> None:
        self.settled.append(f"retry {delay:g}")


class FakeBroker(Broker):
    """Accepts publishes until told to refuse one event id."""

    def __init__(self) -> None:
        super().__init__("fake://", "test")
        self.published: list[str] = []
        self.refuse: str | None = None

    @property
    def connected(self) -> bool:
        return True

    async def connect(self) -> None:
        pass

    async def publish(self, event_type: str, body: bytes, *, dedup_id: str) -> None:
        if dedup_id == self.refuse:
            raise BusError(f"broker refused {dedup_id}")
        self.published.append(dedup_id)

    async def consume(self, consumer: str, event_types: Sequence[str], handle: DeliveryHandler) -> None:
        pass

    async def stop_consuming(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_init.sql").write_text(MIGRATION)
    database = SqliteDatabase(tmp_path / "service.db")
    await database.migrate("service", folder)
    yield database
    await database.close()


def body(event_id: str = "e-1") -> bytes:
    envelope = Envelope(id=event_id, type=UserDeleted.TYPE, source="users", data={"user_id": "u-1"})
    return envelope.model_dump_json().encode()


async def write_effect(tx: Tx, envelope: Envelope) -> None:
    await tx.execute("INSERT INTO effects (event_id) VALUES (:id)", {"id": envelope.id})


async def fail(tx: Tx, envelope: Envelope) -> None:
    await write_effect(tx, envelope)
    raise RuntimeError("smtp down")


def consumer(db: Database, handler: Handler, policy: RetryPolicy | None = None) -> InboxConsumer:
    return InboxConsumer(db, "mailer", {UserDeleted.TYPE: handler}, policy)


async def effects(db: Database) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM effects")
    return count


async def test_a_message_is_acked_only_after_its_effect_committed(db: Database) -> None:
    delivery = FakeDelivery(db, body())
    await consumer(db, write_effect).handle(delivery)
    assert delivery.settled == ["ack"]
    assert delivery.committed_at_ack == 1


async def test_a_second_copy_is_acked_without_running_the_handler(db: Database) -> None:
    inbox = consumer(db, write_effect)
    for _ in range(2):
        await inbox.handle(FakeDelivery(db, body()))
    assert await effects(db) == 1


async def test_a_failing_handler_is_rolled_back_and_retried_with_growing_delays(db: Database) -> None:
    inbox = consumer(db, fail, RetryPolicy(max_deliveries=5, base_delay=0.5, max_delay=1.5))
    settled = []
    for deliveries in (1, 2, 3):
        delivery = FakeDelivery(db, body(), deliveries=deliveries)
        await inbox.handle(delivery)
        settled += delivery.settled
    assert settled == ["retry 0.5", "retry 1", "retry 1.5"]
    assert await effects(db) == 0
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0


async def test_the_last_allowed_delivery_is_dead_lettered_then_acked(db: Database) -> None:
    delivery = FakeDelivery(db, body(), deliveries=3)
    await consumer(db, fail, RetryPolicy(max_deliveries=3)).handle(delivery)
    assert delivery.settled == ["ack"]
    row = await db.fetchrow("SELECT event_id, deliveries, error FROM bus_dead_letters")
    assert row is not None
    assert (row["event_id"], row["deliveries"], row["error"]) == ("e-1", 3, "RuntimeError: smtp down")


async def test_a_database_outage_is_retried_and_never_dead_lettered(db: Database) -> None:
    async def database_down(tx: Tx, envelope: Envelope) -> None:
        raise DatabaseUnavailable("PostgreSQL: connection refused")

    delivery = FakeDelivery(db, body(), deliveries=9)
    await consumer(db, database_down, RetryPolicy(max_deliveries=3)).handle(delivery)
    assert delivery.settled == ["retry 30"]
    assert await db.fetchval("SELECT count(*) FROM bus_dead_letters") == 0


async def test_a_message_without_an_envelope_is_dead_lettered_under_its_message_id(db: Database) -> None:
    delivery = FakeDelivery(db, b"\xff not json", message_id=None)
    await consumer(db, write_effect).handle(delivery)
    assert delivery.settled == ["ack"]
    row = await db.fetchrow("SELECT event_id, type, payload FROM bus_dead_letters")
    assert row is not None
    assert row["event_id"].startswith("sha256:")
    assert row["type"] == UserDeleted.TYPE
    assert "not json" in row["payload"]


async def test_the_relay_stops_at_a_refused_event_so_later_ones_never_overtake_it(db: Database) -> None:
    outbox, broker = Outbox(db, source="users"), FakeBroker()
    relay = Relay(db, broker, outbox.wakeup)
    ids = []
    for i in range(4):
        async with db.transaction() as tx:
            ids.append((await outbox.add(tx, UserDeleted(user_id=f"u-{i}"))).id)
    assert outbox.wakeup.is_set()

    broker.refuse = ids[2]
    with pytest.raises(BusError):
        await relay.publish_pending()
    assert broker.published == ids[:2]
    rows = await db.fetch("SELECT id, sent_at, attempts, last_error FROM outbox ORDER BY seq")
    assert [row["sent_at"] is not None for row in rows] == [True, True, False, False]
    assert rows[2]["attempts"] == 1 and "refused" in rows[2]["last_error"]

    broker.refuse = None
    assert await relay.publish_pending() == 2
    assert broker.published == ids


async def test_the_outbox_refuses_an_event_that_is_not_a_registered_contract(db: Database) -> None:
    class Shipped(Event):
        TYPE: ClassVar[str] = "order.shipped.v1"

    async with db.transaction() as tx:
        with pytest.raises(BusError, match=r"order\.shipped\.v1"):
            await Outbox(db, source="orders").add(tx, Shipped())


async def test_a_handler_for_an_unknown_event_name_is_a_config_error(db: Database) -> None:
    settings = ServiceSettings(service_name="mailer")
    with pytest.raises(ConfigError, match=r"order\.shipped\.v9"):
        EventBus(settings, db, handlers={"order.shipped.v9": write_effect})


async def test_a_namespace_that_cannot_name_a_stream_is_a_config_error(db: Database) -> None:
    settings = ServiceSettings(service_name="mailer", broker_url="nats://127.0.0.1:4222", bus_namespace="a.b")
    with pytest.raises(ConfigError, match=r"'a\.b'"):
        EventBus(settings, db, options=BusOptions())

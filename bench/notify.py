"""Event-to-email latency of notifications: order.confirmed.v1 committed in an outbox -> email accepted by SMTP.

Target (issue 6): p99 <= 500 ms while orders are confirmed at 100/s. Driving 100 real checkouts/s is not
possible on this 2-CPU machine shared with other work (a checkout costs ~15 ms of CPU across five services), so
the load is order.confirmed.v1 events written through a real kit outbox (its own SQLite file, the relay woken on
commit) at a fixed rate, open loop, onto the real broker; the notifications service runs as its own process
(granian, SQLite) and sends to an aiosmtpd server in this process. Latency is taken from the outbox commit to
the end of the SMTP DATA the service sent for that event (one clock, this process).
Run: .venv/bin/python bench/notify.py [--rate 100] [--seconds 20] [--broker nats://127.0.0.1:4222|amqp://...]
(default broker: an embedded nats-server, as `microshop up` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from microshop_contracts import OrderConfirmed, OrderLine
from microshop_kit import db as dbmod
from microshop_kit.bus import EventBus
from microshop_kit.settings import ServiceSettings
from microshop_launcher import Platform, PlatformConfig

_EVENT_ID = re.compile(rb"^X-Microshop-Event-Id: *(\S+)", re.MULTILINE | re.IGNORECASE)


class Arrivals:
    """aiosmtpd handler noting when the email of each event was accepted."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # A regex, not the email parser: parsing costs ~1 ms of this process's CPU, which the service shares.
        found = _EVENT_ID.search(envelope.original_content or b"")
        event_id = found.group(1).decode() if found else ""
        self.at.setdefault(event_id, time.perf_counter())
        self.arrived.set()
        return "250 OK"


def confirmed(n: int) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=str(uuid.uuid4()),
        user_id=f"user-{n % 500}",
        email=f"buyer{n % 500}@example.com",
        name="Bench Buyer",
        lines=[
            OrderLine(sku="COF-003", name="Espresso beans 1 kg", quantity=2, unit_price=2490),
            OrderLine(sku="MUG-1", name="Mug", quantity=1, unit_price=990),
        ],
        total=5970,
        currency="EUR",
        shipping_address={"name": "Bench Buyer", "line1": "1 Analytical Way", "city": "London", "postal_code": "N1"},
    )


async def open_outbox(folder: Path, broker_url: str, namespace: str) -> tuple[EventBus, dbmod.Database]:
    settings = ServiceSettings(service_name="orders", broker_url=broker_url, bus_namespace=namespace, data_dir=folder)
    database = await dbmod.connect(settings.resolved_database_url())
    empty = folder / "no-migrations"
    empty.mkdir(parents=True, exist_ok=True)
    await database.migrate("orders", empty)  # the kit's outbox and inbox tables
    bus = EventBus(settings, database)
    await bus.start()
    async with asyncio.timeout(30):
        await bus.wait_ready()
    return bus, database


async def publish_at(bus: EventBus, rate: float, seconds: float, sent: dict[str, float]) -> float:
    """Open loop: one event every 1/rate s (never waiting for the emails); returns the rate achieved."""
    interval, total = 1.0 / rate, int(rate * seconds)
    started = time.perf_counter()
    for n in range(total):
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        async with bus.outbox.db.transaction() as tx:
            envelope = await bus.outbox.add(tx, confirmed(n))
        sent[envelope.id] = time.perf_counter()
    return total / (time.perf_counter() - started)


async def wait_all(arrivals: Arrivals, ids: set[str], within: float) -> None:
    """Until every id has its email, or ``within`` seconds passed (the missing ones are reported)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not ids <= arrivals.at.keys():
                arrivals.arrived.clear()
                await arrivals.arrived.wait()


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": round(values[-1] * 1000, 1)}


async def measure(platform: Platform, smtp: Arrivals, root: Path, rate: float, seconds: float) -> dict[str, Any]:
    bus, database = await open_outbox(root / "orders", platform.broker_url, platform.config.namespace)
    try:
        warm: dict[str, float] = {}
        await publish_at(bus, 20, 1, warm)  # consumers, connections and caches warm
        await wait_all(smtp, set(warm), 30)
        sent: dict[str, float] = {}
        achieved = await publish_at(bus, rate, seconds, sent)
        await wait_all(smtp, set(sent), 60)
    finally:
        await bus.close()
        await database.close()
    latencies = [smtp.at[event_id] - at for event_id, at in sent.items() if event_id in smtp.at]
    return {
        "events": len(sent),
        "publish_rate": round(achieved, 1),
        "emails": len(latencies),
        "missing": len(sent) - len(latencies),
        **percentiles(latencies),
    }


async def run(rate: float, seconds: float, broker: str | None) -> dict[str, Any]:
    smtp = Arrivals()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(smtp, hostname="bench.smtp"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        root = Path(tmp)
        config = PlatformConfig.isolated(
            root,
            broker_url=broker,
            namespace=f"bench{uuid.uuid4().hex[:8]}",
            extra_env={"NOTIFICATIONS_SMTP_PORT": str(port), "NOTIFICATIONS_USERS_URL": ""},
            log_json=True,
        )
        platform = Platform(config)
        platform.root.mkdir(parents=True, exist_ok=True)
        try:
            if broker is None:
                platform.start_broker()
            await asyncio.to_thread(platform.start_instance, "notifications")
            result = await measure(platform, smtp, root, rate, seconds)
        finally:
            await asyncio.to_thread(platform.stop)
            if broker is not None:
                await asyncio.to_thread(platform.purge_broker)
            server.close()
    return {"broker": broker or "embedded nats", "rate": rate, "seconds": seconds, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="order.confirmed.v1 events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--broker", default=None, help="nats://... or amqp://... (default: embedded nats-server)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rate, args.seconds, args.broker)), indent=2))


if __name__ == "__main__":
    main()

"""Checkout throughput of the real platform through the gateway, on SQLite and on PostgreSQL, invariants checked.

Target (issue 5), concurrency 16 on this machine: >= 500 orders/s with p99 <= 150 ms on SQLite. Each of the 16
workers is one signed-in customer with a card who, back to back, puts one unit in the cart (``PUT /api/v1/cart``)
and places the order (``POST /api/v1/orders``: validate user, reserve, charge, commit, confirm). Reported: orders/s
over the run (the cart call included: it is part of every checkout), and p50/p99 of ``POST /api/v1/orders`` and
of the cart call. After the run every order must be final, confirmed orders == captured payments, and per SKU
on hand + reserved + sold == received with nothing left reserved. Also reported: the CPU time each process of
the platform spent per checkout over the measured window (user + system, from /proc), which stays meaningful when
other work shares the machine, unlike orders/s.
The load generator is this process (asyncio; the checkouts through the kit's HTTP client, the setup through
aiohttp); it shares the 2 CPUs with the services, so the figures are a floor (its CPU and the mail sink's are
reported too). The load average at the start is reported beside them.
With ``--rate R`` checkouts start on a fixed schedule of R per second instead of back to back (issue 6 measures
confirmation emails while checkouts run at 100 orders/s); the run reports whether the platform kept up.
The baseline, in the same run (back to back only): the same load against bench/bare_checkout.py, the five
processes a checkout crosses with the same calls between them and nothing else (plain ASGI, plain sqlite3, no
events or email): the floor of this architecture on this machine; and the same with the one thing a checkout
must do after it, at its floor (``floor_with_email``: the events written in the charging and confirming
transactions, published to JetStream with fsync on every write, and the confirmation email through a bare
notifications process to the same mail sink). Each database's figures are also given as ratios against both
(``against_the_floor``, ``against_the_floor_with_email``).
Run: .venv/bin/python bench/checkout.py [--seconds 10] [--concurrency 16] [--no-postgres] [--no-sqlite] [--rate 100]
     [--broker amqp://guest:guest@127.0.0.1:5672/] [--no-floor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from gateway import process
from loadgen import seeded_platform, stock_up

from microshop_kit.ports import free_port
from microshop_kit.wire import InstancePool
from microshop_launcher import Platform, PlatformConfig

SKUS = ["COF-003", "COF-001", "TEA-006", "KIT-001"]
ADDRESS = {"name": "Bench", "line1": "1 Road", "city": "Town", "postal_code": "1", "country": "GB"}
CARD = {"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}}


_JSON = (b"content-type", b"application/json")
_LIMIT = 1 << 20


def percentiles(latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


async def customer(session: aiohttp.ClientSession, base: str) -> tuple[dict[str, str], str]:
    email, password = f"bench-{uuid.uuid4().hex[:12]}@example.com", "correct horse battery staple"
    async with session.post(f"{base}/api/v1/users", json={"email": email, "password": password, "name": "Bench"}):
        pass
    async with session.post(f"{base}/api/v1/auth/token", json={"email": email, "password": password}) as response:
        auth = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
    async with session.post(f"{base}/api/v1/payment-methods", json=CARD, headers=auth) as response:
        method = str((await response.json())["id"])
    return auth, method


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(platform: Platform) -> dict[str, int]:
    pids = {name: instances[0].pid for name, instances in platform.processes.items() if instances}
    if platform.broker is not None:
        pids["nats"] = platform.broker.pid
    return pids


def bystanders(platform: Platform) -> dict[str, int]:
    """Processes that share the machine but are not the shop: the mail sink (standing in for a mail relay)
    and this load generator."""
    pids = {"load_generator": os.getpid()}
    if platform.mailsink is not None:
        pids["mail_sink"] = platform.mailsink.pid
    return pids


async def load(
    base: str,
    seconds: float,
    concurrency: int,
    pids: dict[str, int],
    rate: float | None = None,
    others: dict[str, int] | None = None,
    on_window: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """``concurrency`` customers check out for ``seconds``, back to back or, with ``rate``, starting checkouts
    on a fixed schedule of ``rate`` per second (each taken by the next free customer); CPU of ``pids`` (the
    shop) and of ``others`` (what else shares the machine) per checkout meanwhile. ``on_window`` is called as
    the measured window starts (bench/checkout_ledger.py starts its sampling there)."""
    others = others or {}
    orders: list[float] = []
    carts: list[float] = []
    statuses: dict[str, int] = {}
    # The checkouts go through the kit's HTTP client (a third of aiohttp's CPU per request): the load generator
    # shares the 2 CPUs with the shop, so the less it takes, the more of the machine the shop gets.
    client = InstancePool(base, max_idle=concurrency * 2)
    async with aiohttp.ClientSession() as session:
        # Signing up hashes passwords (argon2): done before the measured window, not counted.
        buyers = [await customer(session, base) for _ in range(concurrency)]

    async def checkout(auth: dict[str, str], method: str, n: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        credentials = [(b"authorization", auth["Authorization"].encode()), _JSON]
        cart = {"lines": [{"sku": SKUS[n % len(SKUS)], "quantity": 1}]}
        await client.request(b"PUT", b"/api/v1/cart", credentials, json.dumps(cart).encode(), limit=_LIMIT)
        placed = time.perf_counter()
        headers = [*credentials, (b"idempotency-key", str(uuid.uuid4()).encode())]
        body = json.dumps({"shipping_address": ADDRESS, "payment_method_id": method}).encode()
        response = await client.request(b"POST", b"/api/v1/orders", headers, body, limit=_LIMIT)
        status = response.status if response.status != 201 else json.loads(response.body)["status"]
        return placed - start, time.perf_counter() - placed, status

    try:
        for n, (auth, method) in enumerate(buyers):  # warm the connections and the caches
            await checkout(auth, method, n)
        if on_window is not None:
            on_window()
        cpu_before = {name: cpu_seconds(pid) for name, pid in {**pids, **others}.items()}
        window_start = time.time()
        started = time.perf_counter()
        deadline = started + seconds
        scheduled = itertools.count()

        async def worker(auth: dict[str, str], method: str, index: int) -> None:
            n = index
            while time.perf_counter() < deadline:
                if rate is not None:
                    at = started + next(scheduled) / rate
                    if at >= deadline:
                        break
                    await asyncio.sleep(at - time.perf_counter())
                cart_s, order_s, status = await checkout(auth, method, n)
                carts.append(cart_s)
                orders.append(order_s)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                n += concurrency

        await asyncio.gather(*(worker(auth, method, i) for i, (auth, method) in enumerate(buyers)))
        elapsed = time.perf_counter() - started
        done = max(1, len(orders))
        cpu_ms = {name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / done for name, pid in pids.items()}
        other_ms = {name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / done for name, pid in others.items()}
    finally:
        client.close()
    return {
        "window_start": window_start,
        "orders": len(orders),
        "orders_per_s": round(len(orders) / elapsed),
        **({"scheduled_per_s": rate} if rate is not None else {}),
        "place_order": percentiles(orders),
        "put_cart": percentiles(carts),
        "outcomes": statuses,
        "cpu_ms_per_checkout": {
            **{name: round(ms, 2) for name, ms in sorted(cpu_ms.items(), key=lambda item: -item[1]) if ms >= 0.01},
            "total": round(sum(cpu_ms.values()), 2),
        },
        "cpu_ms_per_checkout_outside_the_shop": {name: round(ms, 2) for name, ms in other_ms.items()},
    }


async def invariants(platform: Platform) -> dict[str, Any]:
    """Wait for every order to be final, then check money against orders and the stock books."""
    orders_db = await platform.open_database("orders")
    payments_db = await platform.open_database("payments")
    products_db = await platform.open_database("products")
    try:
        for _ in range(300):
            unfinished = await orders_db.fetchval(
                "SELECT count(*) FROM orders WHERE status IN ('PENDING', 'AWAITING_PAYMENT')"
            )
            if not unfinished:
                break
            await asyncio.sleep(0.2)
        confirmed = await orders_db.fetchval("SELECT count(*) FROM orders WHERE status = 'CONFIRMED'")
        captured = await payments_db.fetchval(
            "SELECT count(*) FROM payments WHERE status IN ('succeeded', 'captured') AND amount > 0"
        )
        broken = await products_db.fetch(
            "SELECT sku FROM stock WHERE on_hand + reserved + sold <> received OR on_hand < 0 OR reserved <> 0"
        )
    finally:
        for db in (orders_db, payments_db, products_db):
            await db.close()
    result = {"unfinished": int(unfinished), "confirmed": int(confirmed), "captured": int(captured)}
    assert result["unfinished"] == 0, result
    assert result["confirmed"] == result["captured"], f"confirmed orders != captured payments: {result}"
    assert broken == [], f"stock books broken for {broken}"
    return {**result, "stock_conserved": True}


_EVENT_ID = re.compile(rb"^X-Microshop-Event-Id: *(\S+)", re.MULTILINE | re.IGNORECASE)


async def confirmation_emails(platform: Platform, since: float, within: float = 60.0) -> dict[str, Any]:
    """Order confirmed -> its email accepted by the mail sink, for every order confirmed since the measured
    window started (``since``, wall-clock; the warm-up's orders are left out): from the
    order.confirmed.v1 outbox row (written in the confirming transaction) to the sink's file of the email
    carrying that event id (written when the sink accepts the message). Both are wall-clock times of this
    machine."""
    orders_db = await platform.open_database("orders")
    try:
        rows = await orders_db.fetch("SELECT id, created_at FROM outbox WHERE type = 'order.confirmed.v1'")
    finally:
        await orders_db.close()
    stamped = {str(row["id"]): datetime.fromisoformat(str(row["created_at"])).timestamp() for row in rows}
    confirmed = {event: at for event, at in stamped.items() if at >= since}
    arrived: dict[str, float] = {}
    folders = [platform.root / "mail" / sub for sub in ("new", "cur")]
    seen: set[Path] = set()
    deadline = time.monotonic() + within
    while len(arrived) < len(confirmed) and time.monotonic() < deadline:
        for path in (p for folder in folders if folder.exists() for p in folder.iterdir()):
            if path in seen:
                continue
            seen.add(path)
            found = _EVENT_ID.search(path.read_bytes())
            if found and found.group(1).decode() in confirmed:
                arrived[found.group(1).decode()] = path.stat().st_mtime
        await asyncio.sleep(0.5)
    latencies = [arrived[event] - at for event, at in confirmed.items() if event in arrived]
    return {"emails": len(latencies), "missing": len(confirmed) - len(latencies), **percentiles(latencies)}


def run(
    dialect: str,
    seconds: float,
    concurrency: int,
    rate: float | None,
    broker: str | None,
    on_window: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """One measured run on a fresh platform. ``on_window`` is given the pids of every process on the machine (the
    shop's and the bystanders') as the measured window starts."""
    # 16 customers each placing dozens of orders a second is what the gateway's per-account checkout budget
    # exists to stop: off for the measurement.
    with seeded_platform(dialect, extra_env={"GATEWAY_RATE_LIMITING": "false"}, broker_url=broker) as platform:
        asyncio.run(stock_up(platform, SKUS, 10_000_000))
        pids, others = processes(platform), bystanders(platform)
        start = None if on_window is None else lambda: on_window({**pids, **others})
        result = asyncio.run(load(platform.gateway_url, seconds, concurrency, pids, rate, others, on_window=start))
        since = result.pop("window_start")
        result["invariants"] = asyncio.run(invariants(platform))
        result["confirmed_to_email"] = asyncio.run(confirmation_emails(platform, since))
        return result


def floor(seconds: float, concurrency: int, *, email: bool = False) -> dict[str, Any]:
    """The same load against bench/bare_checkout.py: the five processes a checkout crosses, the same calls
    between them, plain sqlite3 and nothing else. The shop's figures are read against it.

    ``email``: also the events and the confirmation email at their floor (bare_checkout.py's docstring), on the
    launcher's own NATS (JetStream on disk, fsync on every write) and mail sink, counted as in the shop's run: the
    broker with the processes, the sink beside the load generator. Reported: how many confirmed orders' emails the
    sink received (every one must arrive)."""
    script = str(Path(__file__).with_name("bare_checkout.py"))
    roles = ("users", "products", "payments", "orders", "gateway", *(("notifications",) if email else ()))
    ports = {role: free_port() for role in roles}
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    env = {f"BARE_{role.upper()}_URL": url for role, url in urls.items()}
    with tempfile.TemporaryDirectory() as root, contextlib.ExitStack() as stack:
        pids, others = {}, {"load_generator": os.getpid()}
        if email:
            platform = Platform(PlatformConfig.isolated(Path(root) / "platform"))
            stack.callback(platform.stop)
            platform.start_broker()
            platform.start_mailsink()
            assert platform.broker is not None and platform.mailsink is not None
            pids["nats"], others["mail_sink"] = platform.broker.pid, platform.mailsink.pid
            env |= {"BARE_NATS_URL": platform.broker_url, "BARE_SMTP_PORT": str(platform.config.ports["smtp"])}
        for role in roles:
            own = {**env, "BARE_ROLE": role, "BARE_DB": str(Path(root) / f"{role}.db")}
            server = "granian" if role == "gateway" else "uvicorn"  # as the shop runs them
            command = [sys.executable, script, "--port", str(ports[role]), "--server", server]
            pids[role] = stack.enter_context(process(command, own, f"{urls[role]}/livez")).pid
        result = asyncio.run(load(urls["gateway"], seconds, concurrency, pids, others=others))
        if email:
            result["emails"] = asyncio.run(_emails_of(Path(root) / "orders.db", platform.root / "mail"))
    result.pop("window_start")
    return result


async def _emails_of(orders_db: Path, mail: Path, within: float = 60.0) -> dict[str, int]:
    """How many of the floor's confirmed orders (all of them, warm-up included) have their email in the sink."""
    with contextlib.closing(sqlite3.connect(orders_db)) as conn:
        confirmed = conn.execute("SELECT count(*) FROM orders WHERE step = 'confirmed'").fetchone()[0]
    delivered = 0
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        delivered = sum(1 for sub in ("new", "cur") if (mail / sub).exists() for _ in (mail / sub).iterdir())
        if delivered >= confirmed:
            break
        await asyncio.sleep(0.5)
    return {"confirmed": confirmed, "delivered": delivered, "missing": confirmed - delivered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--rate", type=float, help="start this many checkouts per second on a schedule instead of back to back"
    )
    parser.add_argument("--broker", help="a running broker's URL (nats://..., amqp://...) instead of an embedded NATS")
    parser.add_argument("--no-floor", action="store_true", help="skip both floors (bench/bare_checkout.py)")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "broker": args.broker or "embedded NATS",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    dialects = [name for name, off in (("sqlite", args.no_sqlite), ("postgresql", args.no_postgres)) if not off]
    for dialect in dialects:
        report[dialect] = run(dialect, args.seconds, args.concurrency, args.rate, args.broker)
    if not args.no_floor and args.rate is None:
        report["floor"] = bare = floor(args.seconds, args.concurrency)
        report["floor_with_email"] = mailed = floor(args.seconds, args.concurrency, email=True)
        for dialect in dialects:
            shop = report[dialect]
            for name, base in (("against_the_floor", bare), ("against_the_floor_with_email", mailed)):
                shop[name] = {
                    "orders_per_s": round(shop["orders_per_s"] / base["orders_per_s"], 2),
                    "cpu_ms_per_checkout": round(
                        shop["cpu_ms_per_checkout"]["total"] / base["cpu_ms_per_checkout"]["total"], 2
                    ),
                }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

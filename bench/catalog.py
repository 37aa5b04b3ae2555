"""Catalog, search and hot-SKU reservation throughput of the real platform, on SQLite and on PostgreSQL.

Targets (issue 4), concurrency 16 on this machine: catalog list (20 items) through the gateway >= 4,000 req/s
with p99 <= 20 ms; search >= 2,000 req/s. Baseline in the same run: the same requests sent to the products
service directly, so the ratio shows what the gateway hop costs. Also reservations/s of 1 unit each on one hot
SKU (16 concurrent reservers, straight to products: the gateway never routes internal calls).
The load generator is an asyncio aiohttp client in this process (wrk is not installed here); it shares the 2
CPUs with the services, so the figures are a floor.
Run: .venv/bin/python bench/catalog.py [--seconds 10] [--concurrency 16] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from microshop_launcher import Platform, PlatformConfig

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
SEARCHES = ["espresso", "cast iron", "head", "tea pot", "pragmatic programmer", "wireless", "coffee beans", "stove"]
HOT_SKU = "COF-003"

Request = Callable[[aiohttp.ClientSession, int], Any]


async def load(request: Request, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` workers send requests back to back for ``seconds``; req/s and latency percentiles."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(concurrency):  # warm the connections
            await request(session, next(counter))
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                status = await request(session, next(counter))
                latencies.append(time.perf_counter() - start)
                if status not in (200, 201):
                    errors[str(status)] = errors.get(str(status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "errors": errors,
    }


def get(base: str, path: str, params: Callable[[int], dict[str, str]]) -> Request:
    async def request(session: aiohttp.ClientSession, n: int) -> int:
        async with session.get(base + path, params=params(n)) as response:
            await response.read()
            return response.status

    return request


def reserve(base: str) -> Request:
    async def request(session: aiohttp.ClientSession, n: int) -> int:
        body = {"order_id": str(uuid.uuid4()), "lines": [{"sku": HOT_SKU, "quantity": 1}]}
        async with session.post(base + "/internal/v1/reservations", json=body) as response:
            await response.read()
            return response.status

    return request


async def stock_up(platform: Platform, units: int) -> None:
    """Enough units on the hot SKU that no reservation of the run is refused (books stay balanced)."""
    db = await platform.open_database("products")
    try:
        await db.execute(
            "UPDATE stock SET on_hand = :units, received = :units + reserved + sold WHERE sku = :sku",
            {"sku": HOT_SKU, "units": units},
        )
    finally:
        await db.close()


async def measure(platform: Platform, seconds: float, concurrency: int) -> dict[str, Any]:
    gateway, products = platform.gateway_url, platform.url("products")
    catalog = {"limit": "20"}
    # Pages 1-3 and the sorts rotate so that not every request is the same (the service has no cache).
    sorts = ["name", "price", "-price", "newest"]

    def listing(n: int) -> dict[str, str]:
        return {**catalog, "sort": sorts[n % 4], "page": str(1 + n % 3)}

    def searching(n: int) -> dict[str, str]:
        return {"q": SEARCHES[n % len(SEARCHES)], "limit": "20"}

    results: dict[str, Any] = {}
    for name, base in (("gateway", gateway), ("products_direct", products)):
        results[f"catalog_{name}"] = await load(get(base, "/api/v1/products", listing), seconds, concurrency)
        results[f"search_{name}"] = await load(get(base, "/api/v1/products", searching), seconds, concurrency)
    await stock_up(platform, 10_000_000)
    results["reserve_hot_sku_direct"] = await load(reserve(products), seconds, concurrency)
    return results


def run(dialect: str, seconds: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        extra: dict[str, Any] = {}
        if dialect == "postgresql":
            extra = {"postgres_url": POSTGRES, "database_prefix": f"bench_{uuid.uuid4().hex[:8]}"}
        platform = Platform(PlatformConfig.isolated(Path(tmp), **extra))
        try:
            platform.start(timeout=90)
            platform.run_cli("products", "seed")
            return asyncio.run(measure(platform, seconds, concurrency))
        finally:
            platform.stop()
            if dialect == "postgresql":
                platform.drop_databases()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds}
    for dialect in ("sqlite", *(() if args.no_postgres else ("postgresql",))):
        report[dialect] = run(dialect, args.seconds, args.concurrency)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

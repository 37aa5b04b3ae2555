"""Catalog, search and hot-SKU reservation throughput of the real platform, on SQLite and on PostgreSQL.

Targets (issue 4), concurrency 16 on this machine: catalog list (20 items) through the gateway >= 4,000 req/s
with p99 <= 20 ms; search >= 2,000 req/s. Baseline in the same run: the same requests sent to the products
service directly, so the ratio shows what the gateway hop costs. Each configuration runs twice: with the
response caches (the default: products and the gateway reuse a public answer for up to 1 s) and without them
(PRODUCTS_/GATEWAY_RESPONSE_CACHE_SECONDS=0: every request reaches the database). Catalog requests rotate over
12 pages (3 pages x 4 sorts), searches over 8 queries. Also reservations/s of 1 unit each on one hot SKU
(16 concurrent reservers, straight to products: the gateway never routes internal calls).
Load generator: wrk when installed (bench/loadgen.py), else an aiohttp client in this process.
Run: .venv/bin/python bench/catalog.py [--seconds 10] [--concurrency 16] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import aiohttp
from loadgen import aiohttp_loop, get_load, seeded_platform, stock_up

from microshop_launcher import Platform

SEARCHES = ["espresso", "cast iron", "head", "tea pot", "pragmatic programmer", "wireless", "coffee beans", "stove"]
HOT_SKU = "COF-003"
LISTINGS = [
    f"/api/v1/products?limit=20&sort={sort}&page={page}"
    for sort in ("name", "price", "-price", "newest")
    for page in (1, 2, 3)
]
QUERIES = [f"/api/v1/products?limit=20&q={query.replace(' ', '+')}" for query in SEARCHES]
NO_CACHE = {"PRODUCTS_RESPONSE_CACHE_SECONDS": "0", "GATEWAY_RESPONSE_CACHE_SECONDS": "0"}


async def reservations(base: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` reservers of 1 unit of the hot SKU back to back: reservations/s and latency."""

    async def reserve(session: aiohttp.ClientSession, _: int) -> int:
        body = {"order_id": str(uuid.uuid4()), "lines": [{"sku": HOT_SKU, "quantity": 1}]}
        async with session.post(base + "/internal/v1/reservations", json=body) as response:
            await response.read()
            return response.status

    return await aiohttp_loop(reserve, seconds, concurrency, ok=(201,))


def measure(platform: Platform, seconds: float, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, base in (("gateway", platform.gateway_url), ("products_direct", platform.url("products"))):
        results[f"catalog_{name}"] = get_load(base, LISTINGS, seconds, concurrency)
        results[f"search_{name}"] = get_load(base, QUERIES, seconds, concurrency)
    for kind in ("catalog", "search"):
        direct, gateway = results[f"{kind}_products_direct"], results[f"{kind}_gateway"]
        results[f"{kind}_gateway_to_direct"] = round(gateway["req_per_s"] / direct["req_per_s"], 2)
    return results


def run(dialect: str, seconds: float, concurrency: int, *, cached: bool) -> dict[str, Any]:
    with seeded_platform(dialect, extra_env=None if cached else NO_CACHE) as platform:
        results = measure(platform, seconds, concurrency)
        if not cached:  # reservations never touch a cache: measured once
            asyncio.run(stock_up(platform, [HOT_SKU], 10_000_000))
            direct = platform.url("products")
            results["reserve_hot_sku_direct"] = asyncio.run(reservations(direct, seconds, concurrency))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds}
    for dialect in ("sqlite", *(() if args.no_postgres else ("postgresql",))):
        report[dialect] = {
            "cached": run(dialect, args.seconds, args.concurrency, cached=True),
            "uncached": run(dialect, args.seconds, args.concurrency, cached=False),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

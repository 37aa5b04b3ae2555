"""What the benchmarks share: load generators, and the platform they run against.

wrk (C, barely any CPU of its own) when it is installed, else an asyncio aiohttp client in this process (which
then shares the CPUs with the services: figures are a floor). wrk is Debian's package (`apt-get install -y
wrk`). Each run sends GET requests rotating over a list of paths so that a cache in front of the service sees
the same mix a shop front would, not one URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from microshop_launcher import Platform, PlatformConfig

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
#: One request of a worker: sends it on the session (the n-th of the run) and gives back the HTTP status.
Send = Callable[[aiohttp.ClientSession, int], Awaitable[int]]

_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """req/s and p50/p99 of GETs rotating over ``paths`` on ``base``, measured by wrk."""
    script = _LUA % ", ".join(f'"{path}"' for path in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", handle.name, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        Path(handle.name).unlink()
    latency = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "req_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),  # type: ignore[union-attr]
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "errors": {"non_2xx": int(non_2xx.group(1))} if non_2xx else {},
        **({"socket_errors": errors.group(1)} if errors else {}),
        "load_generator": "wrk",
    }


async def aiohttp_loop(send: Send, seconds: float, concurrency: int, ok: Sequence[int] = (200,)) -> dict[str, Any]:
    """``concurrency`` workers calling ``send`` back to back for ``seconds``: requests/s, p50/p99 and the count
    of answers not in ``ok``, by status."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                status = await send(session, next(counter))
                latencies.append(time.perf_counter() - start)
                if status not in ok:
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


async def aiohttp_load(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """The same measurement as ``wrk`` from an asyncio client in this process."""

    async def send(session: aiohttp.ClientSession, n: int) -> int:
        async with session.get(base + paths[n % len(paths)]) as response:
            await response.read()
            return response.status

    return {**await aiohttp_loop(send, seconds, concurrency), "load_generator": "aiohttp"}


def get_load(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    if wrk_available():
        return wrk(base, paths, seconds, concurrency)
    return asyncio.run(aiohttp_load(base, paths, seconds, concurrency))


@contextlib.contextmanager
def seeded_platform(
    dialect: str = "sqlite", extra_env: dict[str, str] | None = None, broker_url: str | None = None
) -> Iterator[Platform]:
    """The whole platform on free ports with the demo catalog, on SQLite or on PostgreSQL (a throw-away database
    per service, dropped afterwards), on its own embedded NATS or on the broker at ``broker_url`` (under a
    throw-away namespace, purged afterwards); stopped when the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        extra: dict[str, Any] = {"extra_env": dict(extra_env or {})}
        if broker_url is not None:
            extra.update(broker_url=broker_url, namespace=f"bench{uuid.uuid4().hex[:8]}")
        if dialect == "postgresql":
            extra.update(postgres_url=POSTGRES, database_prefix=f"bench_{uuid.uuid4().hex[:8]}")
        platform = Platform(PlatformConfig.isolated(Path(tmp), **extra))
        try:
            platform.start(timeout=90)
            platform.run_cli("products", "seed")
            yield platform
        finally:
            platform.stop()
            if broker_url is not None:
                platform.purge_broker()
            if dialect == "postgresql":
                platform.drop_databases()


async def stock_up(platform: Platform, skus: Sequence[str], units: int) -> None:
    """Enough units of each SKU that no reservation of the run is refused (the books stay balanced)."""
    db = await platform.open_database("products")
    try:
        for sku in skus:
            await db.execute(
                "UPDATE stock SET on_hand = :units, received = :units + reserved + sold WHERE sku = :sku",
                {"sku": sku, "units": units},
            )
    finally:
        await db.close()

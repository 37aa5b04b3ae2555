"""Load generators shared by the benchmarks: wrk (C, barely any CPU of its own) when it is installed, else an
asyncio aiohttp client in this process (which then shares the CPUs with the services: figures are a floor).

wrk is Debian's package (`apt-get install -y wrk`). Each run sends GET requests rotating over a list of paths
so that a cache in front of the service sees the same mix a shop front would, not one URL.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

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


async def aiohttp_load(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """The same measurement from an asyncio client in this process."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                async with session.get(base + paths[next(counter) % len(paths)]) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status >= 400:
                    errors[str(response.status)] = errors.get(str(response.status), 0) + 1

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
        "load_generator": "aiohttp",
    }


def get_load(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    if wrk_available():
        return wrk(base, paths, seconds, concurrency)
    return asyncio.run(aiohttp_load(base, paths, seconds, concurrency))

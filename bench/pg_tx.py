"""What a transaction costs through the kit's PostgreSQL pool, against the same pool with asyncpg's default reset
of a returned connection (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``: one more round trip
per transaction), same process, same server: 4 tasks x 2,000 one-statement transactions, 3 rounds of each, medians.
Also the same statement sent alone through ``Database.write`` (autocommit: no BEGIN and COMMIT round trips), as
the kit does for a write that is one statement (a saga step, marking outbox rows sent).
Run: .venv/bin/python bench/pg_tx.py (PostgreSQL at 127.0.0.1:5432, trust auth)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg
from loadgen import POSTGRES

from microshop_kit.db import PostgresDatabase

TASKS, EACH, ROUNDS = 4, 2_000, 3


async def per_transaction(db: PostgresDatabase, *, alone: bool = False) -> tuple[float, float]:
    """Wall time and CPU time of this process per transaction, in microseconds (``alone``: the statement is
    sent by itself, its own transaction)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            if alone:
                await db.write("SELECT 1 AS one")
                continue
            async with db.transaction() as tx:
                await tx.fetch("SELECT 1 AS one")

    await worker(200)  # connections open, statements prepared
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(EACH) for _ in range(TASKS)))
    done = TASKS * EACH
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


async def measure() -> dict[str, Any]:
    url = f"{POSTGRES}/postgres"
    results: dict[str, list[tuple[float, float]]] = {"asyncpg_default_reset": [], "kit": [], "kit_statement_alone": []}
    for _ in range(ROUNDS):
        for name in results:
            if name.startswith("kit"):
                db = await PostgresDatabase.connect(url, min_size=TASKS, max_size=TASKS)
            else:
                db = PostgresDatabase(await asyncpg.create_pool(url, min_size=TASKS, max_size=TASKS))
            try:
                results[name].append(await per_transaction(db, alone=name == "kit_statement_alone"))
            finally:
                await db.close()
    report: dict[str, Any] = {
        name: {
            "wall_us_per_tx": round(statistics.median(w for w, _ in runs), 1),
            "cpu_us_per_tx": round(statistics.median(c for _, c in runs), 1),
        }
        for name, runs in results.items()
    }
    base = report["asyncpg_default_reset"]
    report["kit_cpu_to_default"] = round(report["kit"]["cpu_us_per_tx"] / base["cpu_us_per_tx"], 2)
    report["kit_wall_to_default"] = round(report["kit"]["wall_us_per_tx"] / base["wall_us_per_tx"], 2)
    alone, kit = report["kit_statement_alone"], report["kit"]
    report["statement_alone_cpu_to_kit_transaction"] = round(alone["cpu_us_per_tx"] / kit["cpu_us_per_tx"], 2)
    report["statement_alone_wall_to_kit_transaction"] = round(alone["wall_us_per_tx"] / kit["wall_us_per_tx"], 2)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure()), indent=2))

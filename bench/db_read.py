"""The data layer's cost on SQLite: a 20-row catalog read through the kit against raw sqlite3, same process.

Budget (issue 2, DESIGN.md): tens of microseconds of CPU per read, no thread hop per statement.
Run: .venv/bin/python bench/db_read.py
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from microshop_kit.db import SqliteDatabase

SQL = "SELECT id, sku, name, price, currency FROM products WHERE category = :c ORDER BY name LIMIT 20"
ROUNDS = 20_000


def _prepare(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE products (id TEXT PRIMARY KEY, sku TEXT, name TEXT, price INTEGER, currency TEXT, category TEXT)"
    )
    conn.executemany(
        "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)",
        [(f"id{i}", f"SKU-{i}", f"Product {i:04d}", 100 + i, "EUR", f"c{i % 5}") for i in range(1000)],
    )
    conn.execute("CREATE INDEX products_by_category ON products (category, name)")
    conn.commit()
    conn.close()


def raw(path: Path) -> float:
    conn = sqlite3.connect(path)
    started = time.process_time()
    for i in range(ROUNDS):
        rows = conn.execute(SQL, {"c": f"c{i % 5}"}).fetchall()
        assert len(rows) == 20
    return (time.process_time() - started) / ROUNDS


async def kit(path: Path) -> float:
    db = SqliteDatabase(path)
    started = time.process_time()
    for i in range(ROUNDS):
        rows = await db.fetch(SQL, {"c": f"c{i % 5}"})
        assert len(rows) == 20
    elapsed = (time.process_time() - started) / ROUNDS
    await db.close()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        _prepare(path)
        baseline = raw(path)
        measured = asyncio.run(kit(path))
    result = {
        "read_20_rows_cpu_us": {
            "raw_sqlite3_tuples": round(baseline * 1e6, 1),
            "kit_dict_rows": round(measured * 1e6, 1),
        },
        "ratio_kit_to_raw": round(measured / baseline, 2),
        "budget": "tens of microseconds of CPU per 20-row read",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

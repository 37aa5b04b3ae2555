"""The kit's database interface on a real SQLite file and a real PostgreSQL database: transactions, errors,
named parameters, migrations and concurrent writers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microshop_kit.db import Database, PostgresDatabase, SqliteDatabase, load_migrations
from microshop_kit.errors import ConfigError, IntegrityError
from microshop_kit.testing import postgres_database

SCHEMA = """
CREATE TABLE items (
  sku TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  stock INTEGER NOT NULL CHECK (stock >= 0)
);
-- No CHECK here: an oversell must show as a negative stock, not as a constraint error.
CREATE TABLE counters (sku TEXT PRIMARY KEY, stock INTEGER NOT NULL);
-- Checked at COMMIT, not at the INSERT: the one way to make a commit itself fail on both dialects.
CREATE TABLE parents (id INTEGER PRIMARY KEY);
CREATE TABLE children (parent_id INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);
"""


def write_migrations(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


@contextlib.asynccontextmanager
async def open_database(dialect: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database, nothing migrated: a SQLite file, or a fresh PostgreSQL database."""
    if dialect == "sqlite":
        database: Database = SqliteDatabase(tmp_path / "kit.db")
        try:
            yield database
        finally:
            await database.close()
        return
    async with postgres_database("kitdb") as url:
        database = await PostgresDatabase.connect(url)
        try:
            yield database
        finally:
            await database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def bare_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with open_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def db(bare_db: Database, tmp_path: Path) -> Database:
    """The database with the test schema migrated as component ``shop``."""
    await bare_db.migrate("shop", write_migrations(tmp_path / "migrations", {"0001_init.sql": SCHEMA}))
    return bare_db


async def add_item(db: Database, sku: str, *, name: str | None = None, stock: int = 1) -> None:
    await db.execute(
        "INSERT INTO items (sku, name, stock) VALUES (:sku, :name, :stock)",
        {"sku": sku, "name": name or f"item {sku}", "stock": stock},
    )


async def skus(db: Database) -> list[str]:
    return [row["sku"] for row in await db.fetch("SELECT sku FROM items ORDER BY sku")]


# --------------------------------------------------------------------------------------------- transactions


async def test_a_transaction_commits_its_statements(db: Database) -> None:
    async with db.transaction() as tx:
        changed = await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', 1), ('b', 'B', 2)")

    assert changed == 2
    assert await skus(db) == ["a", "b"]


async def test_an_exception_inside_a_transaction_rolls_everything_back(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', 1)")
            await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('b', 'B', 1)")
            raise RuntimeError("boom")

    assert await skus(db) == []
    await add_item(db, "c")  # and the database takes the next transaction
    assert await skus(db) == ["c"]


async def test_after_commit_callbacks_run_once_the_data_is_committed(db: Database) -> None:
    seen: list[int] = []

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', 1)")
        tx.after_commit(lambda: seen.append(len(seen)))
        tx.after_commit(lambda: seen.append(len(seen)))
        assert seen == []

    assert seen == [0, 1]


async def test_after_commit_callbacks_never_run_on_rollback(db: Database) -> None:
    seen: list[str] = []

    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            tx.after_commit(lambda: seen.append("ran"))
            raise RuntimeError("boom")
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            tx.after_commit(lambda: seen.append("ran"))
            await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', -1)")

    assert seen == []


async def test_a_commit_that_fails_raises_integrity_error_and_runs_no_callback(db: Database) -> None:
    seen: list[str] = []

    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO children VALUES (1)")
            tx.after_commit(lambda: seen.append("ran"))

    assert seen == []
    assert await db.fetchval("SELECT count(*) FROM children") == 0
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO parents VALUES (1)")
        await tx.execute("INSERT INTO children VALUES (1)")
    assert await db.fetchval("SELECT count(*) FROM children") == 1


async def test_a_unique_violation_raises_the_kits_integrity_error(db: Database) -> None:
    await add_item(db, "a", name="same")

    with pytest.raises(IntegrityError):
        await add_item(db, "b", name="same")
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('c', 'C', 1)")
            await tx.fetch("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', 1) RETURNING sku")

    assert await skus(db) == ["a"]


async def test_a_single_write_returns_its_rows_commits_and_refuses_a_violation(db: Database) -> None:
    await add_item(db, "a", stock=5)

    row = await db.write_row("UPDATE items SET stock = stock - 2 WHERE sku = :sku RETURNING sku, stock", {"sku": "a"})
    none = await db.write_row("UPDATE items SET stock = 0 WHERE sku = 'missing' RETURNING sku")
    rows = await db.write("INSERT INTO items (sku, name, stock) VALUES ('b', 'B', 1), ('c', 'C', 1) RETURNING sku")
    with pytest.raises(IntegrityError):
        await db.write("INSERT INTO items (sku, name, stock) VALUES ('d', 'D', 1), ('a', 'A', 1) RETURNING sku")

    assert dict(row or {}) == {"sku": "a", "stock": 3}
    assert none is None
    assert sorted(r["sku"] for r in rows) == ["b", "c"]
    assert await skus(db) == ["a", "b", "c"]  # committed, and the refused statement left nothing ('d')
    assert await db.fetchval("SELECT stock FROM items WHERE sku = 'a'") == 3


async def test_the_database_is_usable_right_after_an_integrity_error(db: Database) -> None:
    await add_item(db, "a")
    with pytest.raises(IntegrityError):
        await add_item(db, "a")

    # SQLite has one write connection: left inside the failed transaction, this BEGIN would fail.
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('b', 'B', 1)")
    await add_item(db, "c")

    assert await skus(db) == ["a", "b", "c"]


async def test_a_read_outside_the_transaction_sees_committed_data_only(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items (sku, name, stock) VALUES ('a', 'A', 1)")
        assert await tx.fetchval("SELECT count(*) FROM items") == 1
        assert await db.fetchval("SELECT count(*) FROM items") == 0

    assert await db.fetchval("SELECT count(*) FROM items") == 1


# ------------------------------------------------------------------------------------------------ statements


async def test_a_named_parameter_may_be_used_twice(db: Database) -> None:
    await add_item(db, "a", name="b")
    await add_item(db, "b", name="x")

    rows = await db.fetch(
        "SELECT sku FROM items WHERE sku = :key OR name = :key ORDER BY sku",
        {"key": "b"},
    )
    async with db.transaction() as tx:
        changed = await tx.execute(
            "UPDATE items SET stock = stock + :n WHERE sku = :key OR name = :key",
            {"key": "b", "n": 5},
        )

    assert [row["sku"] for row in rows] == ["a", "b"]
    assert changed == 2


async def test_a_postgresql_cast_is_not_taken_for_a_parameter(tmp_path: Path) -> None:
    async with open_database("postgresql", tmp_path) as db:
        await db.execute("CREATE TABLE items (sku TEXT PRIMARY KEY, name TEXT, stock INTEGER)")
        await add_item(db, "a", stock=7)

        row = await db.fetchrow(
            "SELECT stock::text AS stock, :sku::text || '-' || :sku::text AS twice FROM items WHERE sku = :sku",
            {"sku": "a"},
        )

    assert row is not None
    assert dict(row) == {"stock": "7", "twice": "a-a"}


async def test_fetchrow_and_fetchval_give_none_on_no_rows(db: Database) -> None:
    missing = {"sku": "nope"}

    assert await db.fetch("SELECT sku FROM items WHERE sku = :sku", missing) == []
    assert await db.fetchrow("SELECT sku FROM items WHERE sku = :sku", missing) is None
    assert await db.fetchval("SELECT stock FROM items WHERE sku = :sku", missing) is None
    async with db.transaction() as tx:
        assert await tx.fetchrow("SELECT sku FROM items WHERE sku = :sku", missing) is None
        assert await tx.fetchval("SELECT stock FROM items WHERE sku = :sku", missing) is None


async def test_a_check_constraint_from_a_migration_is_enforced(db: Database) -> None:
    await add_item(db, "a", stock=1)

    with pytest.raises(IntegrityError):
        await db.execute("UPDATE items SET stock = stock - 2 WHERE sku = 'a'")

    assert await db.fetchval("SELECT stock FROM items WHERE sku = 'a'") == 1


# ------------------------------------------------------------------------------------------------ migrations


async def test_migrations_are_applied_once(bare_db: Database, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {"0001_init.sql": "CREATE TABLE a (id INTEGER);", "0002_more.sql": "CREATE TABLE b (id INTEGER);"},
    )

    first = await bare_db.migrate("shop", folder)
    second = await bare_db.migrate("shop", folder)

    assert first == ["kit:bus", "shop:init", "shop:more"]
    assert second == []


async def test_a_new_migration_file_is_applied_on_the_next_migrate(bare_db: Database, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"0001_init.sql": "CREATE TABLE a (id INTEGER);"})
    await bare_db.migrate("shop", folder)

    write_migrations(folder, {"0002_b.sql": "CREATE TABLE b (id INTEGER);"})

    assert await bare_db.migrate("shop", folder) == ["shop:b"]
    assert await bare_db.fetchval("SELECT count(*) FROM b") == 0


async def test_the_kits_own_tables_exist_after_a_service_migration(db: Database) -> None:
    for table in ("outbox", "inbox", "bus_dead_letters"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_a_dialect_specific_migration_is_chosen_for_its_dialect(bare_db: Database, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "0001_init.sql": "CREATE TABLE marks (dialect TEXT NOT NULL);",
            "0002_x.sql": "INSERT INTO marks VALUES ('generic');",
            "0002_x.sqlite.sql": "INSERT INTO marks VALUES ('sqlite');",
            "0002_x.postgresql.sql": "INSERT INTO marks VALUES ('postgresql');",
            "0003_y.postgresql.sql": "INSERT INTO marks VALUES ('only postgresql');",
        },
    )

    applied = await bare_db.migrate("shop", folder)

    marks = [row["dialect"] for row in await bare_db.fetch("SELECT dialect FROM marks")]
    if bare_db.dialect == "sqlite":
        assert marks == ["sqlite"]
        assert applied == ["kit:bus", "shop:init", "shop:x"]
    else:
        assert marks == ["postgresql", "only postgresql"]
        assert applied == ["kit:bus", "shop:init", "shop:x", "shop:y"]


@pytest.mark.parametrize("name", ["init.sql", "1_init.sql", "0001-init.sql", "0001_init.mysql.sql", "0001_.sql"])
def test_a_badly_named_migration_file_is_a_config_error(tmp_path: Path, name: str) -> None:
    folder = write_migrations(tmp_path / "m", {name: "SELECT 1;"})

    with pytest.raises(ConfigError, match=re.escape(name)):
        load_migrations(folder, "sqlite")


@pytest.mark.parametrize(
    "names",
    [
        ("0002_a.sql", "0002_b.sql"),
        ("0002_a.sqlite.sql", "0002_b.sqlite.sql"),
        ("0002_a.postgresql.sql", "0002_b.postgresql.sql"),
    ],
)
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_two_migrations_with_one_version_are_a_config_error(
    tmp_path: Path, names: tuple[str, str], dialect: str
) -> None:
    folder = write_migrations(tmp_path / "m", dict.fromkeys(names, "SELECT 1;"))

    with pytest.raises(ConfigError, match="version 2"):
        load_migrations(folder, dialect)


async def test_a_failing_migration_leaves_nothing_and_can_be_fixed(bare_db: Database, tmp_path: Path) -> None:
    folder = write_migrations(
        tmp_path / "m", {"0001_init.sql": "CREATE TABLE a (id INTEGER);\nINSERT INTO missing VALUES (1);"}
    )
    with pytest.raises(Exception, match="missing"):
        await bare_db.migrate("shop", folder)

    write_migrations(folder, {"0001_init.sql": "CREATE TABLE a (id INTEGER);"})

    assert await bare_db.migrate("shop", folder) == ["shop:init"]
    await bare_db.execute("INSERT INTO a VALUES (1)")


# ----------------------------------------------------------------------------------------------- concurrency


async def test_concurrent_buyers_never_oversell(db: Database) -> None:
    await db.execute("INSERT INTO counters VALUES ('a', 20)")
    sold: list[int] = []

    async def buy(buyer: int) -> None:
        async with db.transaction() as tx:
            stock = await tx.fetchval(f"SELECT stock FROM counters WHERE sku = :sku{tx.for_update}", {"sku": "a"})
            await asyncio.sleep(0.001)  # let the other buyers run between the read and the write
            if stock > 0:
                await tx.execute("UPDATE counters SET stock = stock - 1 WHERE sku = :sku", {"sku": "a"})
                tx.after_commit(lambda: sold.append(buyer))

    async with asyncio.timeout(8):
        await asyncio.gather(*(buy(buyer) for buyer in range(50)))

    assert len(sold) == 20
    assert await db.fetchval("SELECT stock FROM counters WHERE sku = 'a'") == 0


async def test_two_sqlite_databases_on_one_file_both_write_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second = SqliteDatabase(path), SqliteDatabase(path)  # like two processes: a lock each
    await first.migrate("shop", write_migrations(tmp_path / "m", {"0001_init.sql": SCHEMA}))
    gaps: list[float] = []
    holding = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def hold_the_write_lock() -> None:
        async with first.transaction() as tx:
            await tx.execute("INSERT INTO items VALUES ('a', 'A', 1)")
            holding.set()
            await asyncio.sleep(0.2)  # the other database meets SQLITE_BUSY all this while

    async def write_meanwhile() -> None:
        await holding.wait()
        await add_item(second, "b")

    ticking = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(5):
            await asyncio.gather(hold_the_write_lock(), write_meanwhile())
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)

    assert await skus(first) == ["a", "b"]
    assert await skus(second) == ["a", "b"]
    assert max(gaps) < 0.1, f"the event loop was blocked for {max(gaps):.3f}s"
    await first.close()
    await second.close()

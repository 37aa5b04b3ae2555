"""SQLite through stdlib sqlite3, run directly on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from microshop_kit.db.base import MIGRATIONS_TABLE, Database, Migration, Params, Row, Tx, now_iso
from microshop_kit.errors import DatabaseUnavailable, IntegrityError


class SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        try:
            return self._conn.execute(sql, params or {}).rowcount
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteDatabase(Database):
    """SQLite in WAL mode, statements run directly on the event loop (no thread hop).

    One write connection per process; writes are serialised by an asyncio.Lock and ``BEGIN IMMEDIATE``.
    SQLite's busy handler would sleep on the loop, so ``busy_timeout`` stays tiny and SQLITE_BUSY (another
    process holds the write lock) is retried here with ``await asyncio.sleep`` backoff.
    """

    dialect = "sqlite"
    busy_budget_seconds = 5.0

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = self._open(path)
        self._reader = self._open(path)
        self._reader.execute("PRAGMA query_only = ON")
        self._lock = asyncio.Lock()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = _dict_row
        conn.execute("PRAGMA busy_timeout = 5")
        for _ in range(200):  # journal_mode needs the lock briefly when another process is starting too
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def _until_not_busy(self, conn: sqlite3.Connection, statement: str) -> None:
        """Run BEGIN IMMEDIATE or COMMIT, retrying SQLITE_BUSY with a non-blocking backoff."""
        delay, deadline = 0.001, time.monotonic() + self.busy_budget_seconds
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise DatabaseUnavailable(f"SQLite {self.path}: {statement} failed: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def _begin(self, conn: sqlite3.Connection) -> None:
        await self._until_not_busy(conn, "BEGIN IMMEDIATE")

    async def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            await self._until_not_busy(conn, "COMMIT")
        except sqlite3.IntegrityError as exc:  # a deferred constraint (DEFERRABLE foreign key) fails at COMMIT
            raise IntegrityError(str(exc)) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._begin(self._writer)
            tx = SqliteTx(self._writer)
            try:
                yield tx
                await self._commit(self._writer)
            except BaseException:
                if self._writer.in_transaction:  # never leave the one write connection inside a transaction
                    self._writer.execute("ROLLBACK")
                raise
        tx._committed()

    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        try:
            return self._reader.execute(sql, params or {}).fetchall()
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise DatabaseUnavailable(str(exc)) from exc
            raise

    async def ping(self) -> None:
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def close(self) -> None:
        self._reader.close()
        self._writer.close()

    async def _apply(self, component: str, migration: Migration) -> bool:
        async with self._lock:
            self._writer.execute(MIGRATIONS_TABLE)
        key = {"c": component, "v": migration.version}
        async with self.transaction() as tx:
            done = await tx.fetchrow("SELECT 1 FROM schema_migrations WHERE component = :c AND version = :v", key)
            if done is None:
                for statement in _split_sqlite(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations VALUES (:c, :v, :n, :at)",
                    {**key, "n": migration.name, "at": now_iso()},
                )
        return done is None


def _split_sqlite(script: str) -> list[str]:
    """Split a script into statements (sqlite3.execute runs one at a time; executescript would commit)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip().strip(";").strip():
                statements.append(current)
            current = ""
    if current.strip():
        statements.append(current)
    return statements

"""PostgreSQL through an asyncpg pool."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from microshop_kit.db.base import MIGRATIONS_TABLE, Database, Migration, Params, Row, Tx, now_iso
from microshop_kit.errors import DatabaseError, DatabaseUnavailable, IntegrityError

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


class _Compiled:
    __slots__ = ("names", "sql")

    def __init__(self, sql: str, names: list[str]) -> None:
        self.sql = sql
        self.names = names


_compiled: dict[str, _Compiled] = {}


def _compile(sql: str) -> _Compiled:
    """``:name`` placeholders to asyncpg's ``$n`` (cached per statement text)."""
    compiled = _compiled.get(sql)
    if compiled is None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        compiled = _Compiled(_NAMED.sub(number, sql), names)
        _compiled[sql] = compiled
    return compiled


def _args(compiled: _Compiled, params: Params) -> Sequence[Any]:
    if not compiled.names:
        return ()
    if params is None:
        raise DatabaseError(f"Statement needs parameters {compiled.names}: {compiled.sql}")
    try:
        return [params[name] for name in compiled.names]
    except KeyError as exc:
        raise DatabaseError(f"Parameter {exc} is missing for: {compiled.sql}") from None


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(str(exc), constraint=getattr(exc, "constraint_name", None))
    if isinstance(exc, _CONNECTION_ERRORS):
        return DatabaseUnavailable(f"PostgreSQL: {exc}")
    return exc


class PostgresTx(Tx):
    for_update = " FOR UPDATE"

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        compiled = _compile(sql)
        try:
            status: str = await self._conn.execute(compiled.sql, *_args(compiled, params))
        except Exception as exc:
            raise _translate(exc) from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        compiled = _compile(sql)
        try:
            rows: list[Row] = await self._conn.fetch(compiled.sql, *_args(compiled, params))
        except Exception as exc:
            raise _translate(exc) from exc
        return rows


async def _no_session_state_to_reset(_conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own step (an open transaction rolled
    back, listeners dropped): nothing. Microshop's SQL keeps no session state (no SET, LISTEN, cursors outside a
    transaction or session advisory locks: migrations take a transaction-scoped one), so asyncpg's default
    reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), a round trip per transaction
    and per pooled query, is left out (`bench/pg_tx.py` measures what that saves)."""


class PostgresDatabase(Database):
    """PostgreSQL through an asyncpg pool (no thread hops)."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=5, reset=_no_session_state_to_reset
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            conn = await self._pool.acquire(timeout=5)
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            tx = PostgresTx(conn)
            try:
                async with conn.transaction():
                    yield tx
            except asyncpg.PostgresError as exc:
                raise _translate(exc) from exc
            except _CONNECTION_ERRORS as exc:
                raise _translate(exc) from exc
        finally:
            await self._pool.release(conn)
        tx._committed()

    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        compiled = _compile(sql)
        try:
            rows: list[Row] = await self._pool.fetch(compiled.sql, *_args(compiled, params), timeout=10)
        except Exception as exc:
            raise _translate(exc) from exc
        return rows

    async def execute(self, sql: str, params: Params = None) -> int:
        """One statement in autocommit: it is its own transaction, without BEGIN and COMMIT round trips."""
        compiled = _compile(sql)
        try:
            status: str = await self._pool.execute(compiled.sql, *_args(compiled, params), timeout=10)
        except Exception as exc:
            raise _translate(exc) from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def write(self, sql: str, params: Params = None) -> list[Row]:
        """One statement in autocommit (see ``execute``), and the rows it returns."""
        return await self.fetch(sql, params)

    async def ping(self) -> None:
        try:
            await self._pool.fetchval("SELECT 1", timeout=2)
        except Exception as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

    async def _apply(self, component: str, migration: Migration) -> bool:
        lock_key = int.from_bytes(hashlib.sha256(b"microshop-migrations").digest()[:7], "big")
        async with self._pool.acquire() as conn, conn.transaction():
            # Several instances may start at once: one applies, the others wait and then see it applied.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
            await conn.execute(MIGRATIONS_TABLE)
            done = await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE component = $1 AND version = $2",
                component,
                migration.version,
            )
            if done is None:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, $3, $4)",
                    component,
                    migration.version,
                    migration.name,
                    now_iso(),
                )
            return done is None

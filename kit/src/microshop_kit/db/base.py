"""The database interface every service uses: transactions, reads, migrations."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from microshop_kit.errors import ConfigError

Row = Mapping[str, Any]
Params = Mapping[str, Any] | None
_KIT_MIGRATIONS = Path(__file__).parent.parent / "migrations"


class Tx(abc.ABC):
    """One open transaction. Statements take named parameters (``:name``)."""

    #: ``" FOR UPDATE"`` on PostgreSQL, empty on SQLite (whose write transactions already hold the lock).
    for_update: ClassVar[str] = ""

    def __init__(self) -> None:
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    def _committed(self) -> None:
        for callback in self._after_commit:
            callback()

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = None) -> int:
        """Run a statement; returns the number of rows it changed."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Params = None) -> list[Row]: ...

    async def fetchrow(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = None) -> Any:
        row = await self.fetchrow(sql, params)
        return None if row is None else next(iter(row.values()))


class Database(abc.ABC):
    """A service's database: transactions, autocommit reads, migrations, readiness ping."""

    dialect: ClassVar[str]

    @abc.abstractmethod
    def transaction(self) -> Any:
        """``async with db.transaction() as tx`` — commit on success, roll back on any exception."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Params = None) -> list[Row]:
        """A read outside any transaction (sees committed data)."""

    async def fetchrow(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = None) -> Any:
        row = await self.fetchrow(sql, params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, sql: str, params: Params = None) -> int:
        """One statement that writes, atomic on its own; returns the number of rows it changed."""
        async with self.transaction() as tx:
            count: int = await tx.execute(sql, params)
            return count

    async def write(self, sql: str, params: Params = None) -> list[Row]:
        """One statement that writes, atomic on its own, and the rows it returns (``RETURNING``). On SQLite it
        runs in a write transaction of its own (the one write connection, its lock); on PostgreSQL it is sent
        alone, which saves the BEGIN and COMMIT round trips of a transaction."""
        async with self.transaction() as tx:
            rows: list[Row] = await tx.fetch(sql, params)
            return rows

    async def write_row(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.write(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise DatabaseUnavailable when the database cannot answer."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _apply(self, component: str, migration: Migration) -> bool:
        """Apply one migration unless already applied; True when it ran."""

    async def migrate(self, component: str, folder: Path) -> list[str]:
        """Apply the numbered ``.sql`` files of ``folder`` not applied yet; returns the names applied.

        ``0001_init.sql`` is used by both dialects unless ``0001_init.sqlite.sql`` or
        ``0001_init.postgresql.sql`` exists for this one. The kit's own tables (outbox, inbox) are
        applied first, as component ``kit``.
        """
        applied: list[str] = []
        if component != "kit":
            applied += await self.migrate("kit", _KIT_MIGRATIONS)
        for migration in load_migrations(folder, self.dialect):
            if await self._apply(component, migration):
                applied.append(f"{component}:{migration.name}")
        return applied


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+?)(?:\.(sqlite|postgresql))?\.sql$")


def load_migrations(folder: Path, dialect: str) -> list[Migration]:
    chosen: dict[int, tuple[bool, Path, str]] = {}
    seen: dict[tuple[int, str | None], Path] = {}  # every dialect's files: a clash fails on SQLite too, not in prod
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise ConfigError(f"Migration file {path} is not named NNNN_name[.sqlite|.postgresql].sql")
        version, name, only = int(match.group(1)), match.group(2), match.group(3)
        previous = seen.setdefault((version, only), path)
        if previous != path:
            raise ConfigError(f"Two migrations have version {version} in {folder}: {previous.name}, {path.name}")
        if only is not None and only != dialect:
            continue
        specific = only is not None
        if version not in chosen or specific:
            chosen[version] = (specific, path, name)
    return [Migration(v, name, path.read_text()) for v, (_, path, name) in sorted(chosen.items())]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
    "name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, version))"
)

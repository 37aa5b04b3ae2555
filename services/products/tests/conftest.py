"""Fixtures of the products tests: the app on a SQLite file or a fresh PostgreSQL database, and the stock
invariants checked in that database after every test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from microshop_kit.testing import require_server, running_app
from microshop_products import ProductsSettings, create_app
from microshop_products.seed import seed_catalog
from microshop_products.testing import Service, ServiceFactory, check_stock_invariants

POSTGRES_SERVER = os.environ.get("MICROSHOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A uniquely named, empty PostgreSQL database for one test, dropped afterwards."""
    parts = urlsplit(POSTGRES_SERVER)
    require_server(parts.hostname or "127.0.0.1", parts.port or 5432, "PostgreSQL")
    name = f"products_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres", timeout=10, command_timeout=60)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None (the default SQLite file in data_dir) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
def make_service(tmp_path: Path, database_url: str | None) -> ServiceFactory:
    """Start the app with settings overrides and a catalog; checks the stock invariants when it stops."""

    @contextlib.asynccontextmanager
    async def start(catalog: dict[str, Any] | None = None, **overrides: Any) -> AsyncIterator[Service]:
        values: dict[str, Any] = {"data_dir": tmp_path, "database_url": database_url, "broker_url": None}
        settings = ProductsSettings(**{**values, **overrides})
        app = create_app(settings)
        async with running_app(app) as client:
            service = Service(app, client, settings)
            await seed_catalog(service.db, catalog=catalog)
            yield service
            await check_stock_invariants(service.db)

    return start

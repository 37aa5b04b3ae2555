"""Fixtures of the products tests: the app on a SQLite file or a fresh PostgreSQL database, and the stock
invariants checked in that database after every test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from microshop_kit.testing import JwtIssuer, jwks_server, postgres_database, running_app
from microshop_products import ProductsSettings, create_app
from microshop_products.seed import seed_catalog
from microshop_products.testing import Service, ServiceFactory, check_stock_invariants


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None (the default SQLite file in data_dir) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    async with postgres_database("products") as url:
        yield url


@pytest.fixture
def issuer() -> JwtIssuer:
    """Signs the access tokens the admin tests send (stands in for the users service)."""
    return JwtIssuer()


@pytest.fixture
async def jwks_url(issuer: JwtIssuer) -> AsyncIterator[str]:
    async with jwks_server(issuer) as url:
        yield url


@pytest.fixture
def make_service(tmp_path: Path, database_url: str | None, jwks_url: str) -> ServiceFactory:
    """Start the app with settings overrides and a catalog; checks the stock invariants when it stops."""

    @contextlib.asynccontextmanager
    async def start(catalog: dict[str, Any] | None = None, **overrides: Any) -> AsyncIterator[Service]:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "database_url": database_url,
            "broker_url": None,
            "jwks_url": jwks_url,
        }
        settings = ProductsSettings(**{**values, **overrides})
        app = create_app(settings)
        async with running_app(app) as client:
            service = Service(app, client, settings)
            await seed_catalog(service.db, catalog=catalog)
            yield service
            await check_stock_invariants(service.db)

    return start

"""Fixtures of the payments tests: a real JWKS issuer and the app running on a SQLite file in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microshop_kit.testing import JwtIssuer, jwks_server, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.testing import Shop


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[JwtIssuer, str]]:
    jwt_issuer = JwtIssuer()
    async with jwks_server(jwt_issuer) as url:
        yield jwt_issuer, url


@pytest.fixture
def settings(tmp_path: Path, issuer: tuple[JwtIssuer, str]) -> PaymentsSettings:
    return PaymentsSettings(
        data_dir=tmp_path, jwks_url=issuer[1], broker_url=None, log_level="DEBUG", max_body_bytes=65_536
    )


@pytest.fixture
async def shop(settings: PaymentsSettings, issuer: tuple[JwtIssuer, str], tmp_path: Path) -> AsyncIterator[Shop]:
    app = create_app(settings)
    async with running_app(app) as client:
        yield Shop(app, client, issuer[0], tmp_path)

"""Fixtures of the orders tests: the fake upstreams over real HTTP and the orders app running against them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microshop_kit.testing import serve_aiohttp
from microshop_orders.testing import Harness, Upstreams, run_harness


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstreams, str]]:
    fake = Upstreams()
    async with serve_aiohttp(fake.app()) as url:
        yield fake, url


@pytest.fixture
async def shop(tmp_path: Path, upstreams: tuple[Upstreams, str]) -> AsyncIterator[Harness]:
    fake, url = upstreams
    async for harness in run_harness(tmp_path, url, fake):
        yield harness

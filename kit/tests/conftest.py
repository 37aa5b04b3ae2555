"""Shared by the kit's tests: where the real servers are, and skipping (or, in CI, failing) when one is down."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from microshop_kit.testing import require_server

POSTGRES_SERVER = os.environ.get("MICROSHOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
NATS_URL = os.environ.get("MICROSHOP_TEST_NATS", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("MICROSHOP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


def require_service(host: str, port: int, what: str) -> None:
    """Skip the calling test when ``what`` is not reachable at host:port; with CI=true, fail it instead."""
    require_server(host, port, what)


def _required(url: str, what: str, default_port: int) -> str:
    parts = urlsplit(url)
    require_service(parts.hostname or "127.0.0.1", parts.port or default_port, what)
    return url


@pytest.fixture
def nats_url() -> str:
    """A reachable NATS server with JetStream (skips, or fails under CI, when there is none)."""
    return _required(NATS_URL, "NATS JetStream", 4222)


@pytest.fixture
def rabbitmq_url() -> str:
    """A reachable RabbitMQ server (skips, or fails under CI, when there is none)."""
    return _required(RABBITMQ_URL, "RabbitMQ", 5672)


@pytest.fixture
def postgres_server() -> str:
    """A reachable PostgreSQL server URL without a database name (tests create their own databases)."""
    return _required(POSTGRES_SERVER, "PostgreSQL", 5432).rstrip("/")

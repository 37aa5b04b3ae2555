"""The settings base every service extends: one class per service, read from env vars with its prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service has. A service subclass sets ``model_config`` with its own env prefix,
    e.g. ``SettingsConfigDict(env_prefix="ORDERS_")`` so ``ORDERS_DATABASE_URL`` sets ``database_url``."""

    model_config = SettingsConfigDict(env_prefix="MICROSHOP_", extra="ignore", frozen=True)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, le=64)
    #: The HTTP server. ``uvicorn`` (httptools, all in the event loop's thread): the checkout's bare processes took
    #: 25-30% less CPU on it than on granian here (docs/architecture.md), so the services behind the gateway run
    #: on it. ``granian`` (I/O in Rust threads) enforces a header read timeout and header limits: the gateway, the
    #: door from outside, keeps it (docs/gateway.md).
    http_server: Literal["uvicorn", "granian"] = "uvicorn"
    instance_id: str = "0"
    #: Where the service keeps its state (SQLite file, keys); the local run points every service at ./var/.
    data_dir: Path = Path("var")
    #: ``sqlite:///path/to/file.db`` (default: a file in data_dir) or ``postgresql://user@host:5432/db``.
    database_url: str | None = None
    #: ``nats://host:4222`` (JetStream) or ``amqp://user:pass@host:5672/``; empty disables the bus.
    broker_url: str | None = None
    #: Subject/exchange prefix, so several platforms (tests) can share one broker without seeing each other.
    bus_namespace: str = "microshop"
    #: Copies of the event stream a NATS cluster keeps (JetStream ``num_replicas``): 1 on one server, 3 on a
    #: 3-node cluster so losing a node loses no event. An existing stream with fewer copies is raised to this.
    #: RabbitMQ ignores it (its quorum queues replicate across the cluster's nodes).
    bus_stream_replicas: int = Field(default=1, ge=1, le=5)
    #: Deliveries of one event a consumer attempts before it records a dead letter (and stops retrying).
    bus_max_deliveries: int = Field(default=5, ge=1)
    jwks_url: str = "http://127.0.0.1:8101/.well-known/jwks.json"
    jwt_issuer: str = "microshop-users"
    jwt_audience: str = "microshop"
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: Timeout for one call to another service, in seconds.
    upstream_timeout: float = Field(default=5.0, gt=0)
    #: Longest reuse of a public GET answer by the service's response cache (0 turns it off); see kit/cache.py.
    response_cache_seconds: float = Field(default=1.0, ge=0, le=60)

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file named after the service in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{self.service_name}.db').as_posix()}"

"""Runs the whole platform as separate OS processes: the broker, the mail sink and every service.

`microshop up` uses it to run the shop; the tests use it as a fixture to start the platform on a chosen
database and broker, run several instances of a service, kill and restart processes and stop the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from microshop_kit.db import Database
from microshop_kit.db import connect as connect_database
from microshop_kit.ports import free_port
from microshop_launcher.processes import LineSink, Process, port_in_use, ready

#: Start order matters only for readiness: users first (it serves the JWKS everyone fetches).
SERVICES = ("users", "products", "payments", "orders", "notifications", "storefront", "gateway")
#: Services that keep a database of their own.
DATABASE_SERVICES = ("users", "products", "orders", "payments", "notifications")
DEFAULT_PORTS = {
    "gateway": 8000,
    "storefront": 8010,
    "users": 8101,
    "products": 8102,
    "orders": 8103,
    "payments": 8104,
    "notifications": 8105,
    "nats": 4230,
    "smtp": 8025,
    "mailbox": 8026,
}


class PlatformError(RuntimeError):
    """A process of the platform failed to start or to become ready."""


@dataclass
class PlatformConfig:
    """Where the platform keeps its state and what it runs on; the defaults are the local run."""

    root: Path = Path("var")
    #: None: a SQLite file per service under root. Else a PostgreSQL server URL without a database name
    #: (``postgresql://postgres@127.0.0.1:5432``): each service gets its own database on it.
    postgres_url: str | None = None
    #: Database name prefix on PostgreSQL (tests use a unique one).
    database_prefix: str = "microshop"
    #: None: start an embedded nats-server (JetStream on disk under root). Else ``nats://...``/``amqp://...``.
    broker_url: str | None = None
    namespace: str = "microshop"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Instances per service (default 1); instance n listens on the service's port + 100 n.
    instances: dict[str, int] = field(default_factory=dict)
    log_json: bool = True
    sink: LineSink | None = None

    @classmethod
    def isolated(cls, root: Path, **kwargs: object) -> PlatformConfig:
        """A configuration on free ports, for tests that run beside a `make up`."""
        ports = {name: free_port() for name in DEFAULT_PORTS}
        return cls(root=root, ports=ports, **kwargs)  # type: ignore[arg-type]


class Platform:
    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.root = config.root.resolve()
        self.processes: dict[str, list[Process]] = {}
        self.broker: Process | None = None
        self.mailsink: Process | None = None

    # --------------------------------------------------------------------------------------------- addresses

    def url(self, service: str, instance: int = 0) -> str:
        return f"http://127.0.0.1:{self.port(service, instance)}"

    def port(self, service: str, instance: int = 0) -> int:
        return self.config.ports[service] + (100 * instance if instance else 0)

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def mailbox_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports['mailbox']}"

    @property
    def broker_url(self) -> str:
        return self.config.broker_url or f"nats://127.0.0.1:{self.config.ports['nats']}"

    def database_url(self, service: str) -> str:
        if self.config.postgres_url:
            return f"{self.config.postgres_url.rstrip('/')}/{self.config.database_prefix}_{service}"
        return f"sqlite:///{self.root / service / f'{service}.db'}"

    async def open_database(self, service: str) -> Database:
        """Open a service's own database, to check invariants directly (close it when done)."""
        return await connect_database(self.database_url(service))

    # ---------------------------------------------------------------------------------------------- lifecycle

    def start(self, progress: Callable[[str, str], None] | None = None, timeout: float = 60.0) -> None:
        """Start everything and wait until every service answers /readyz."""
        note = progress or (lambda _name, _state: None)
        unknown = sorted(set(self.config.instances) - set(SERVICES))
        if unknown:
            raise PlatformError(f"no such service to scale: {', '.join(unknown)}; services: {', '.join(SERVICES)}")
        ours = {k: v for k, v in self.config.ports.items() if k != "nats" or self.config.broker_url is None}
        taken = [f"{name} ({port})" for name, port in ours.items() if port_in_use(port)]
        if taken:
            raise PlatformError(
                "these ports are already in use (is another `microshop up` running?): " + ", ".join(taken)
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config.postgres_url:
            self._create_databases()
        if self.config.broker_url is None:
            self.start_broker()
        self.start_mailsink()
        for name in SERVICES:
            for _ in range(max(1, self.config.instances.get(name, 1))):
                process = self.start_instance(name, wait=False)
                note(process.name, "starting")
        self.wait_ready(SERVICES, timeout=timeout, progress=note)

    def start_instance(self, name: str, instance: int | None = None, *, wait: bool = True) -> Process:
        """Start (another) instance of a service; instance n listens on the base port + 100 n."""
        instances = self.processes.setdefault(name, [])
        index = len(instances) if instance is None else instance
        process = Process(
            name=name if index == 0 else f"{name}-{index}",
            args=[sys.executable, "-m", f"microshop_{name}", "serve"],
            env=self._service_env(name, index),
            log_path=self.root / "logs" / f"{name}-{index}.log",
            ready_url=f"{self.url(name, index)}/readyz",
            sink=self.config.sink,
        )
        process.start()
        if index < len(instances):
            instances[index] = process
        else:
            instances.append(process)
        if wait:
            self._wait_process(process, timeout=30)
        return process

    def wait_ready(
        self,
        names: tuple[str, ...] = SERVICES,
        timeout: float = 60.0,
        progress: Callable[[str, str], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        pending = {p.name: p for name in names for p in self.processes.get(name, [])}
        while pending:
            for key, process in list(pending.items()):
                if not process.alive:
                    raise PlatformError(f"{key} exited while starting:\n{process.tail()}")
                if process.ready_url and ready(process.ready_url, timeout=0.5):
                    del pending[key]
                    if progress:
                        progress(key, "ready")
            if pending and time.monotonic() > deadline:
                details = "\n".join(f"--- {key}\n{p.tail(10)}" for key, p in pending.items())
                raise PlatformError(f"not ready after {timeout:.0f} s: {', '.join(pending)}\n{details}")
            time.sleep(0.05)

    def _wait_process(self, process: Process, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (process.ready_url and ready(process.ready_url, timeout=0.5)):
            if not process.alive:
                raise PlatformError(f"{process.name} exited while starting:\n{process.tail()}")
            if time.monotonic() > deadline:
                raise PlatformError(f"{process.name} not ready after {timeout:.0f} s:\n{process.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every process: services first (they drain), then the mail sink and the broker."""
        everything = [p for name in reversed(SERVICES) for p in self.processes.get(name, [])]
        for process in everything:
            process.signal(signal.SIGTERM)
        for process in everything:
            if not process.wait(10):
                process.signal(signal.SIGKILL)
                process.wait(5)
        for extra in (self.mailsink, self.broker):
            if extra is not None:
                extra.stop()

    def process(self, name: str, instance: int = 0) -> Process:
        return self.processes[name][instance]

    def kill(self, name: str, instance: int = 0, sig: int = signal.SIGKILL) -> None:
        """Kill one service process (SIGKILL by default: no chance to clean up)."""
        process = self.process(name, instance)
        process.signal(sig)
        process.wait(10)

    def restart(self, name: str, instance: int = 0) -> Process:
        process = self.process(name, instance)
        if process.alive:
            process.stop()
        return self.start_instance(name, instance)

    # ------------------------------------------------------------------------------------ broker and mail

    def start_broker(self) -> None:
        """Start the embedded nats-server (JetStream on disk, fsync on every write)."""
        store = self.root / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.config.ports["nats"]}"\n'
            f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n'
        )
        binary = Path(sys.executable).parent / "nats-server"
        self.broker = Process(
            name="nats",
            args=[str(binary), "-c", str(conf)],
            env=dict(os.environ),
            log_path=self.root / "logs" / "nats.log",
            ready_url=None,
            sink=self.config.sink,
        )
        self.broker.start()
        self._wait_port(self.config.ports["nats"], self.broker)

    def stop_broker(self) -> None:
        if self.broker is None:
            raise PlatformError("the broker is not the platform's own (it was given by URL)")
        self.broker.stop()

    def start_mailsink(self) -> None:
        """Start the local SMTP sink (mail kept under root/mail) and wait until it answers."""
        ports = self.config.ports
        self.mailsink = Process(
            name="mailsink",
            args=[
                sys.executable,
                "-m",
                "microshop_launcher.mailsink",
                "--smtp-port",
                str(ports["smtp"]),
                "--http-port",
                str(ports["mailbox"]),
                "--dir",
                str(self.root / "mail"),
            ],
            env=dict(os.environ),
            log_path=self.root / "logs" / "mailsink.log",
            ready_url=f"{self.mailbox_url}/livez",
            sink=self.config.sink,
        )
        self.mailsink.start()
        self._wait_process(self.mailsink, timeout=20)

    def _wait_port(self, port: int, process: Process, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            if not process.alive:
                raise PlatformError(f"{process.name} exited while starting:\n{process.tail()}")
            if time.monotonic() > deadline:
                raise PlatformError(f"{process.name} not listening on {port} after {timeout:.0f} s")
            time.sleep(0.05)

    # ---------------------------------------------------------------------------------------- environment

    def _service_env(self, name: str, instance: int) -> dict[str, str]:
        prefix = name.upper() + "_"
        ports = self.config.ports
        values = {
            "PORT": str(self.port(name, instance)),
            "HOST": "127.0.0.1",
            "INSTANCE_ID": str(instance),
            "DATA_DIR": str(self.root / name),
            "BROKER_URL": self.broker_url,
            "BUS_NAMESPACE": self.config.namespace,
            "JWKS_URL": f"{self.url('users')}/.well-known/jwks.json",
            "LOG_JSON": "true" if self.config.log_json else "false",
        }
        if name in DATABASE_SERVICES:
            values["DATABASE_URL"] = self.database_url(name)
        for upstream in ("users", "products", "orders", "payments", "notifications", "storefront"):
            # Every instance the platform runs or is about to start (callers may start before their upstreams).
            count = max(1, self.config.instances.get(upstream, 1), len(self.processes.get(upstream, [])))
            urls = [self.url(upstream, i) for i in range(count)]
            values[f"{upstream.upper()}_URL"] = ",".join(urls)  # every instance: callers balance and fail over
        values.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(ports["smtp"]), MAILBOX_URL=self.mailbox_url)
        if name == "storefront":
            values["GATEWAY_URL"] = self.gateway_url  # the storefront is a client of the public API
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        env.update({prefix + key: value for key, value in values.items()})
        env.update(self.config.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _create_databases(self) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            server = self.config.postgres_url
            assert server is not None
            conn = await asyncpg.connect(f"{server.rstrip('/')}/postgres", timeout=5)
            try:
                for service in DATABASE_SERVICES:
                    name = f"{self.config.database_prefix}_{service}"
                    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                        await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())

    def drop_databases(self) -> None:
        """Drop the per-service PostgreSQL databases (tests clean up with it)."""
        import asyncio

        import asyncpg

        async def drop() -> None:
            server = self.config.postgres_url
            assert server is not None
            conn = await asyncpg.connect(f"{server.rstrip('/')}/postgres", timeout=5)
            try:
                for service in DATABASE_SERVICES:
                    await conn.execute(
                        f'DROP DATABASE IF EXISTS "{self.config.database_prefix}_{service}" WITH (FORCE)'
                    )
            finally:
                await conn.close()

        asyncio.run(drop())

    def purge_broker(self) -> None:
        """Delete this platform's stream or queues from a broker it shares with others (tests clean up)."""
        import asyncio

        from microshop_kit.bus import broker_for

        async def purge() -> None:
            broker = broker_for(self.broker_url, self.config.namespace)
            await broker.connect()
            try:
                await broker.purge(SERVICES)
            finally:
                await broker.close()

        asyncio.run(purge())

    def run_cli(self, service: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a service's own command (seed, admin create, ...) with the same settings as the service."""
        return subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, "-m", f"microshop_{service}", *args],
            env=self._service_env(service, 0),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


@contextlib.contextmanager
def running(config: PlatformConfig, timeout: float = 60.0) -> Iterator[Platform]:
    platform = Platform(config)
    try:
        platform.start(timeout=timeout)
        yield platform
    finally:
        platform.stop()

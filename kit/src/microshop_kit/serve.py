"""Run a service: its command line (serve, migrate) and the HTTP server under it (uvicorn or granian)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import typer
import uvicorn

from microshop_kit import db as dbmod
from microshop_kit.log import configure_logging
from microshop_kit.settings import ServiceSettings


def _load(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return factory


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the service's event loop: uvloop where it is installed (Linux, macOS; cheaper per request, see
    bench/README.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def serve(target: str, settings: ServiceSettings) -> None:
    """Serve ``module:create_app`` with the server the settings name (``http_server``); ``create_app(settings)``
    must accept the settings.

    One worker (the local run, tests): the server runs embedded in this process's event loop, so a service is one
    OS process that a test can SIGKILL cleanly. More workers (containers): the server's process manager, each
    worker process building its own app from env settings (overrides given here are not passed on).
    """
    if settings.http_server == "uvicorn":
        _serve_uvicorn(target, settings)
    else:
        _serve_granian(target, settings)


def _serve_uvicorn(target: str, settings: ServiceSettings) -> None:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "factory": True,
        "http": "httptools",
        "ws": "none",
        "backlog": 1024,
        # The caller's address stays the connection's peer, as with granian: X-Forwarded-* from the gateway are
        # headers the service reads (or not) itself. No Server header telling what runs here.
        "proxy_headers": False,
        "server_header": False,
        # Longer than the kit's client keeps an idle connection (InstancePool.idle_timeout, 15 s): a connection
        # a caller reuses is never one the server is closing.
        "timeout_keep_alive": 60,
        # The kit's middleware logs every request; uvicorn's own messages go through the service's logging.
        "access_log": False,
        "log_config": None,
        "log_level": "warning",
    }
    if settings.workers > 1:
        uvicorn.run(target, workers=settings.workers, loop="auto", **options)
        return
    factory = _load(target)
    _freeze()
    server = _EmbeddedUvicorn(uvicorn.Config(lambda: factory(settings), **options))
    _run_loop(server.serve())


def _serve_granian(target: str, settings: ServiceSettings) -> None:
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    if settings.workers == 1:
        from granian.server.embed import Server

        factory = _load(target)
        _freeze()
        server = Server(
            lambda: factory(settings),
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            factory=True,
            log_level=LogLevels.warning,
            backlog=1024,
        )

        async def run() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, server.stop)
            await server.serve()

        _run_loop(run())
        return
    from granian import Granian

    Granian(
        target,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=settings.workers,
        log_level=LogLevels.warning,
        backlog=1024,
        loop=Loops.auto,  # uvloop where it is installed
    ).serve()


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server stopped by SIGTERM/SIGINT through the loop's handlers: once it has finished the requests
    in flight and the lifespan's shutdown, the process exits normally (uvicorn's own handling raises the signal
    again at the end, and the process would end as killed by it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        yield


def _freeze() -> None:
    """What the imports made lives as long as the process: out of the collector's sight, so a full collection
    walks only what requests create (shorter pauses in the tail latency)."""
    gc.freeze()


async def migrate(settings: ServiceSettings, folder: Path) -> list[str]:
    database = await dbmod.connect(settings.resolved_database_url())
    try:
        return await database.migrate(settings.service_name, folder)
    finally:
        await database.close()


def service_cli(target: str, settings_factory: Callable[[], ServiceSettings], migrations: Path | None) -> typer.Typer:
    """The command line every service has: ``serve`` and ``migrate``; a service adds its own commands."""
    cli = typer.Typer(no_args_is_help=True, add_completion=False)

    @cli.command("serve")
    def serve_command(
        port: int | None = typer.Option(None, help="Port to listen on (default from settings)"),
        host: str | None = typer.Option(None, help="Address to bind (default from settings)"),
    ) -> None:
        """Serve the HTTP API (and the service's consumers and background loops)."""
        settings = settings_factory()
        overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
        if overrides:
            settings = settings.model_copy(update=overrides)
        serve(target, settings)

    @cli.command("migrate")
    def migrate_command() -> None:
        """Apply the database migrations and exit (also done at start)."""
        settings = settings_factory()
        configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
        if migrations is None:
            typer.echo(f"{settings.service_name} keeps no database")
            return
        applied = asyncio.run(migrate(settings, migrations))
        typer.echo("\n".join(applied) or "up to date")

    return cli

"""`microshop`: the command that runs the shop on this machine (`microshop up`)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from microshop_launcher.platform import SERVICES, Platform, PlatformConfig, PlatformError

DEMO_EMAIL = "demo@microshop.local"
DEMO_PASSWORD = "microshop-demo-2026"  # noqa: S105 - the published demo login of the local run
COLOURS = {
    "gateway": "bright_white",
    "storefront": "magenta",
    "users": "cyan",
    "products": "green",
    "orders": "yellow",
    "payments": "blue",
    "notifications": "bright_magenta",
    "nats": "white",
    "mailsink": "white",
}

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Run microshop on this machine.")
admin = typer.Typer(no_args_is_help=True, help="Manage admin accounts (the API never grants the admin role).")
app.add_typer(admin, name="admin")
console = Console(highlight=False)
RootOption = typer.Option(Path("var"), envvar="MICROSHOP_ROOT", help="Folder that holds all local state")
PostgresOption = typer.Option(
    None, envvar="MICROSHOP_POSTGRES_URL", help="PostgreSQL server URL, e.g. postgresql://postgres@127.0.0.1:5432"
)


@app.callback()
def _root() -> None:
    """microshop on one machine: every service as its own process."""


def _render(name: str, line: str) -> str:
    """One log line as `name | level event key=value`, from the services' JSON logs."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    level = record.pop("level", "info")
    event = record.pop("event", "")
    for noise in ("timestamp", "service", "span_id", "trace_id"):
        record.pop(noise, None)
    details = " ".join(f"{key}={value}" for key, value in record.items())
    return f"{level:<7} {event} {details}".rstrip()


def _status_table(states: dict[str, str]) -> Table:
    table = Table(show_header=False, box=None)
    for name, state in states.items():
        colour = "green" if state == "ready" else "yellow"
        table.add_row(f"[{COLOURS.get(name, 'white')}]{name}[/]", f"[{colour}]{state}[/]")
    return table


def _scale(values: list[str]) -> dict[str, int]:
    """``["products=2", ...]`` as instance counts; a bad value ends the command with a clear message."""
    instances: dict[str, int] = {}
    for value in values:
        name, _, count = value.partition("=")
        if name not in SERVICES or not count.isdigit() or not 1 <= int(count) <= 9:
            raise typer.BadParameter(f"{value!r}: use SERVICE=N with N from 1 to 9 and SERVICE one of {SERVICES}")
        instances[name] = int(count)
    return instances


@app.command()
def up(
    root: Path = RootOption,
    postgres: str | None = PostgresOption,
    broker: str | None = typer.Option(
        None, envvar="MICROSHOP_BROKER_URL", help="nats://... or amqp://... (default: an embedded nats-server)"
    ),
    logs: bool = typer.Option(True, help="Stream the services' logs to this terminal once ready"),
    scale: list[str] = typer.Option(
        [], "--scale", help="SERVICE=N: run N instances of a service (repeatable), e.g. --scale products=2"
    ),
) -> None:
    """Start every service as its own process, seed the demo shop, and run until Ctrl-C."""
    instances = _scale(scale)
    started = time.monotonic()
    streaming = threading.Event()

    def sink(name: str, line: str) -> None:
        if streaming.is_set():
            console.print(f"[{COLOURS.get(name.split('-')[0], 'white')}]{name:>13} |[/] {_render(name, line)}")

    config = PlatformConfig(root=root, postgres_url=postgres, broker_url=broker, sink=sink, instances=instances)
    platform = Platform(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    states = dict.fromkeys(SERVICES, "waiting")
    try:
        with Live(_status_table(states), console=console, transient=True) as live:

            def progress(name: str, state: str) -> None:
                states[name] = state
                live.update(_status_table(states))

            platform.start(progress=progress)
        ready_after = time.monotonic() - started
        _seed(platform)
        _welcome(platform, ready_after)
        if logs:
            streaming.set()
        _watch(platform, stop)
    except PlatformError as exc:
        console.print(f"[red]microshop could not start:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        streaming.clear()
        console.print("stopping microshop ...")
        platform.stop()
        console.print("stopped; state kept in " + str(platform.root))


@admin.command("create")
def admin_create(
    email: str = typer.Option(..., "--email", help="Email address of the admin"),
    password: str = typer.Option(
        ..., "--password", prompt=True, hide_input=True, help="At least 12 characters; asked if omitted"
    ),
    name: str = typer.Option(..., "--name", help="Display name"),
    root: Path = RootOption,
    postgres: str | None = PostgresOption,
) -> None:
    """Create an admin account in the users database `microshop up` runs on (same folder and settings)."""
    platform = Platform(PlatformConfig(root=root, postgres_url=postgres))
    # Handed over in the environment, not as an argument, so it never shows in the process list.
    platform.config.extra_env["USERS_NEW_ACCOUNT_PASSWORD"] = password
    result = platform.run_cli("users", "admin", "create", "--email", email, "--name", name, check=False)
    if result.stdout:
        console.print(result.stdout.rstrip(), markup=False)
    if result.stderr:
        Console(stderr=True, highlight=False).print(result.stderr.rstrip(), markup=False)
    raise typer.Exit(result.returncode)


def _seed(platform: Platform) -> None:
    catalog = platform.run_cli("products", "seed", check=False)
    if catalog.returncode != 0:
        raise PlatformError(f"seeding the catalog failed:\n{catalog.stdout}{catalog.stderr}")
    customer = platform.run_cli(
        "users",
        "create-customer",
        "--email",
        DEMO_EMAIL,
        "--password",
        DEMO_PASSWORD,
        "--name",
        "Demo Customer",
        check=False,
    )
    if customer.returncode != 0:
        raise PlatformError(f"creating the demo customer failed:\n{customer.stdout}{customer.stderr}")


def _welcome(platform: Platform, ready_after: float) -> None:
    console.print(f"\n[bold green]microshop is ready[/] (all services ready after {ready_after:.1f} s)\n")
    console.print(f"  shop:        [bold]{platform.gateway_url}/[/]")
    console.print(f"  API:         {platform.gateway_url}/api/v1/products")
    console.print(f"  mailbox:     {platform.gateway_url}/mailbox")
    console.print(f"  demo login:  {DEMO_EMAIL} / {DEMO_PASSWORD}")
    console.print(f"  state:       {platform.root} (logs in {platform.root / 'logs'})")
    console.print("\nPress Ctrl-C to stop.\n")


def _watch(platform: Platform, stop: threading.Event) -> None:
    reported: set[str] = set()
    while not stop.wait(0.5):
        for processes in platform.processes.values():
            for process in processes:
                if not process.alive and process.name not in reported:
                    reported.add(process.name)
                    console.print(f"[red]{process.name} exited[/]; its log: {process.log_path}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()

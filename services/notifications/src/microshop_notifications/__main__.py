"""Command line of the notifications service: `python -m microshop_notifications serve|migrate|retry-dead-letters`."""

from __future__ import annotations

import asyncio

import typer

from microshop_kit import db as dbmod
from microshop_kit.log import configure_logging
from microshop_kit.serve import service_cli
from microshop_notifications.app import MIGRATIONS
from microshop_notifications.events import Consumers
from microshop_notifications.handlers import DeadLetters, Recorder, Retried
from microshop_notifications.render import Renderer
from microshop_notifications.settings import NotificationsSettings
from microshop_notifications.store import MessageStore

cli = service_cli("microshop_notifications.app:create_app", NotificationsSettings, MIGRATIONS)


async def retry(settings: NotificationsSettings, message_ids: list[str] | None, *, events: bool) -> Retried:
    """Re-queue dead messages and replay dead events in the service's database; a running service's sender
    picks the messages up at its next poll."""
    database = await dbmod.connect(settings.resolved_database_url())
    try:
        await database.migrate(settings.service_name, MIGRATIONS)
        recorder = Recorder(message_id_domain=settings.message_id_domain, wake=lambda: None)
        handlers = Consumers(Renderer(settings.shop_url), recorder).handlers()
        dead = DeadLetters(MessageStore(database), handlers, settings.service_name)
        return await dead.retry(message_ids, events=events)
    finally:
        await database.close()


@cli.command("retry-dead-letters")
def retry_dead_letters(
    message: list[str] = typer.Option(
        None, "--message", "-m", help="Only this dead message (repeatable); default: every dead message"
    ),
    events: bool = typer.Option(True, help="Also replay the events in bus_dead_letters"),
) -> None:
    """Try again what was given up on: dead messages get a fresh set of attempts, dead events are handled anew."""
    settings = NotificationsSettings()
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    result = asyncio.run(retry(settings, message or None, events=events))
    typer.echo(f"re-queued {result.messages} message(s); replayed {result.events} event(s)")
    for failure in result.failed:
        typer.echo(f"still dead: {failure}", err=True)
    if result.failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    cli()

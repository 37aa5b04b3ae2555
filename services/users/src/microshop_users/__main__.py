"""Command line of the users service: serve, migrate, and create accounts (admins only ever from here)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from microshop_kit import db as dbmod
from microshop_kit.bus import Outbox
from microshop_kit.log import configure_logging
from microshop_kit.serve import service_cli
from microshop_users.app import MIGRATIONS
from microshop_users.domain import EmailTaken, InvalidEmail, InvalidName, Role, User, WeakPassword
from microshop_users.handlers import Accounts
from microshop_users.passwords import PasswordHasher
from microshop_users.settings import UsersSettings

cli = service_cli("microshop_users.app:create_app", UsersSettings, MIGRATIONS)
admin = typer.Typer(no_args_is_help=True, help="Manage admin accounts (the API never grants the admin role).")
cli.add_typer(admin, name="admin")

EmailOption = Annotated[str, typer.Option("--email", help="Email address (stored trimmed, lower-case)")]
PasswordOption = Annotated[
    str,
    typer.Option(
        "--password",
        prompt=True,
        hide_input=True,
        envvar="USERS_NEW_ACCOUNT_PASSWORD",  # how `microshop admin create` hands it over: not in the process list
        show_envvar=False,
        help="At least 12 characters; asked if omitted",
    ),
]
NameOption = Annotated[str, typer.Option("--name", help="Display name, 1 to 100 characters")]


async def _register(settings: UsersSettings, *, email: str, password: str, name: str, role: Role) -> User:
    """Register through the same use case as the API, so the account gets the same checks and event."""
    database = await dbmod.connect(settings.resolved_database_url())
    try:
        await database.migrate(settings.service_name, MIGRATIONS)
        # The event row waits in the outbox; the service's relay publishes it once the service runs.
        outbox = Outbox(database, source=settings.service_name)
        hasher = PasswordHasher(memory_cost=settings.password_memory_cost, concurrency=1)
        accounts = Accounts(database, hasher, outbox)
        return await accounts.register(email=email, password=password, name=name, roles=(role,))
    finally:
        await database.close()


def _create(email: str, password: str, name: str, role: Role, *, exists_ok: bool) -> None:
    settings = UsersSettings()
    configure_logging(settings.service_name, "WARNING", json=settings.log_json)
    try:
        user = asyncio.run(_register(settings, email=email, password=password, name=name, role=role))
    except EmailTaken as exc:
        typer.echo(f"An account with email {exc} exists already.", err=not exists_ok)
        raise typer.Exit(0 if exists_ok else 1) from None
    except (InvalidEmail, InvalidName, WeakPassword) as exc:
        field = {InvalidEmail: "email", InvalidName: "name", WeakPassword: "password"}[type(exc)]
        typer.echo(f"--{field}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Created {role} {user.email} (id {user.id}).")


@admin.command("create")
def admin_create(email: EmailOption, password: PasswordOption, name: NameOption) -> None:
    """Create an admin account; fails when the email has an account already."""
    _create(email, password, name, Role.ADMIN, exists_ok=False)


@cli.command("create-customer")
def create_customer(email: EmailOption, password: PasswordOption, name: NameOption) -> None:
    """Create a customer account (the demo customer); an existing email is reported, not an error."""
    _create(email, password, name, Role.CUSTOMER, exists_ok=True)


if __name__ == "__main__":
    cli()

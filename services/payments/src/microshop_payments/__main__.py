"""Command line of the payments service: serve, migrate, and reconcile the ledger with payment states."""

from __future__ import annotations

import asyncio

import typer

from microshop_kit import db as dbmod
from microshop_kit.serve import service_cli
from microshop_payments.app import MIGRATIONS
from microshop_payments.settings import PaymentsSettings
from microshop_payments.store import Mismatch, PaymentStore

cli = service_cli("microshop_payments.app:create_app", PaymentsSettings, MIGRATIONS)


async def _reconcile(settings: PaymentsSettings) -> list[Mismatch]:
    database = await dbmod.connect(settings.resolved_database_url())
    try:
        return await PaymentStore(database).reconcile()
    finally:
        await database.close()


@cli.command("reconcile")
def reconcile_command() -> None:
    """Check that every payment's ledger sums to what its state requires and its refunds to its refunded
    amount; exit 1 on any mismatch."""
    mismatches = asyncio.run(_reconcile(PaymentsSettings()))
    for m in mismatches:
        typer.echo(
            f"{m.payment_id} {m.status}: expected held={m.expected.held} captured={m.expected.captured}, "
            f"ledger held={m.actual.held} captured={m.actual.captured}, "
            f"refunds succeeded={m.refunds[0]} counted={m.refunds[1]}"
        )
    if mismatches:
        raise typer.Exit(1)
    typer.echo("ledger reconciles with every payment")


if __name__ == "__main__":
    cli()

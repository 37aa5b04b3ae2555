"""Command line of the products service: `python -m microshop_products serve|migrate|seed`."""

import asyncio

import typer

from microshop_kit.log import configure_logging
from microshop_kit.serve import service_cli
from microshop_products.app import MIGRATIONS
from microshop_products.seed import seed
from microshop_products.settings import ProductsSettings

cli = service_cli("microshop_products.app:create_app", ProductsSettings, MIGRATIONS)


@cli.command("seed")
def seed_command(
    reset_stock: bool = typer.Option(
        False, "--reset-stock", help="Put every SKU's starting quantity back on hand (reserved and sold stay)"
    ),
) -> None:
    """Load the demo catalog (idempotent: upsert by SKU; stock of known SKUs is kept)."""
    settings = ProductsSettings()
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    report = asyncio.run(seed(settings, reset_stock=reset_stock))
    typer.echo(
        f"catalog seeded: {report.categories} categories, {report.products} products, "
        f"stock created for {report.stock_created} SKUs" + (f", reset for {report.stock_reset}" if reset_stock else "")
    )


if __name__ == "__main__":
    cli()

"""Command line of the orders service: `python -m microshop_orders serve|migrate`."""

from microshop_kit.serve import service_cli
from microshop_orders.app import MIGRATIONS
from microshop_orders.settings import OrdersSettings

cli = service_cli("microshop_orders.app:create_app", OrdersSettings, MIGRATIONS)

if __name__ == "__main__":
    cli()

"""Command line of the notifications service: `python -m microshop_notifications serve|migrate`."""

from microshop_kit.serve import service_cli
from microshop_notifications.app import MIGRATIONS
from microshop_notifications.settings import NotificationsSettings

cli = service_cli("microshop_notifications.app:create_app", NotificationsSettings, MIGRATIONS)

if __name__ == "__main__":
    cli()

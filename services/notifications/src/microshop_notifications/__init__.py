"""microshop notifications service: emails for order and user events, sent over SMTP with retries."""

from microshop_notifications.app import create_app
from microshop_notifications.settings import NotificationsSettings

__all__ = ["NotificationsSettings", "create_app"]

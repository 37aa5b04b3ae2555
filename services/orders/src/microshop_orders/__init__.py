"""microshop orders service: cart, orders and the checkout saga."""

from microshop_orders.app import create_app
from microshop_orders.settings import OrdersSettings

__all__ = ["OrdersSettings", "create_app"]

"""microshop products service: catalog, product images, stock and reservations."""

from microshop_products.app import create_app
from microshop_products.settings import ProductsSettings

__all__ = ["ProductsSettings", "create_app"]

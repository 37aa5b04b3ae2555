"""microshop_storefront: the server-rendered shop, a client of the services' APIs."""

from microshop_storefront.app import create_app
from microshop_storefront.settings import StorefrontSettings

__all__ = ["StorefrontSettings", "create_app"]

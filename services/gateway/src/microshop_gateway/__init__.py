"""microshop_gateway: the single entry point (routing, token checks, proxying to the services)."""

from microshop_gateway.app import create_app
from microshop_gateway.settings import GatewaySettings, RouteSpec

__all__ = ["GatewaySettings", "RouteSpec", "create_app"]

"""Command line of the gateway: ``microshop-gateway serve``."""

from __future__ import annotations

from microshop_gateway.settings import GatewaySettings
from microshop_kit.serve import service_cli

cli = service_cli("microshop_gateway.app:create_app", GatewaySettings, None)

if __name__ == "__main__":
    cli()

"""Command line of the storefront: ``microshop-storefront serve``."""

from __future__ import annotations

from microshop_kit.serve import service_cli
from microshop_storefront.settings import StorefrontSettings

cli = service_cli("microshop_storefront.app:create_app", StorefrontSettings, None)

if __name__ == "__main__":
    cli()

"""Wiring of the products service: catalog and inventory use cases, and the reservation sweeper."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_products.admin_api import admin
from microshop_products.api import internal, router
from microshop_products.handlers import Catalog, CatalogAdmin, Inventory, sweeper
from microshop_products.seed import LOW_THRESHOLD
from microshop_products.settings import ProductsSettings
from microshop_products.store import CatalogAdminStore, CatalogStore, InventoryStore

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ProductsSettings | None = None) -> FastAPI:
    settings = settings or ProductsSettings()
    app: FastAPI

    async def start(kit: Kit) -> None:
        if kit.bus is None:
            raise RuntimeError("products publishes events: it needs the kit's bus (outbox)")
        db = kit.database
        inventory = Inventory(db, InventoryStore(db), kit.bus.outbox, settings.reservation_ttl_seconds)
        app.state.catalog = Catalog(CatalogStore(db))
        app.state.inventory = inventory
        app.state.admin = CatalogAdmin(db, CatalogAdminStore(), kit.bus.outbox, LOW_THRESHOLD)
        sweep = sweeper(inventory, settings.sweep_interval_seconds, settings.sweep_batch, kit.response_cache)
        kit.background(sweep, "reservation-sweeper")

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop products",
            # Routes are matched in order: the internal ones (a checkout's calls) first; no path of theirs overlaps
            # a public one (/internal/v1 against /api/v1).
            routers=[internal, router, admin],
            migrations=MIGRATIONS,
            startup=[start],
            cached_prefixes=("/api/v1/products", "/api/v1/categories"),
        ),
    )
    return app

"""The demo catalog (categories, products, starting stock), loaded idempotently: upsert by SKU."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microshop_kit import db as dbmod
from microshop_kit.db import Database, Tx
from microshop_products import domain
from microshop_products.settings import ProductsSettings

DEMO_CATALOG = Path(__file__).parent / "demo_catalog.json"
LOW_THRESHOLD = 5


@dataclass(frozen=True)
class SeedReport:
    categories: int
    products: int
    stock_created: int
    stock_reset: int


def load_catalog(path: Path = DEMO_CATALOG) -> dict[str, Any]:
    catalog: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return catalog


def starting_stock(sku: str) -> int:
    """20..200 units, derived from the SKU: the same on every machine and every run."""
    return 20 + int.from_bytes(hashlib.sha256(sku.encode()).digest()[:4], "big") % 181


async def seed_catalog(db: Database, *, reset_stock: bool = False, catalog: dict[str, Any] | None = None) -> SeedReport:
    """Upsert categories and products; create stock for new SKUs. Stock that exists is left alone (units
    reserved or sold stay so) unless ``reset_stock``, which puts the starting quantity back on hand.

    A product may name its starting ``stock``; otherwise it is derived from the SKU (20..200 units).
    """
    catalog = catalog or load_catalog()
    now = domain.timestamp()
    created = reset = 0
    async with db.transaction() as tx:
        for category in catalog["categories"]:  # parents are listed before their children
            await _upsert_category(tx, category)
        for product in catalog["products"]:
            await _upsert_product(tx, product, catalog["currency"], now)
            units = int(product.get("stock", starting_stock(product["sku"])))
            created += await _create_stock(tx, product["sku"], units)
            if reset_stock:
                reset += await _reset_stock(tx, product["sku"], units)
    return SeedReport(len(catalog["categories"]), len(catalog["products"]), created, reset)


async def _upsert_category(tx: Tx, category: dict[str, Any]) -> None:
    parent = category.get("parent")
    await tx.execute(
        "INSERT INTO categories (id, slug, name, parent_id) VALUES (:id, :slug, :name, :parent_id) "
        "ON CONFLICT (slug) DO UPDATE SET name = excluded.name, parent_id = excluded.parent_id",
        {
            "id": domain.category_id(category["slug"]),
            "slug": category["slug"],
            "name": category["name"],
            "parent_id": domain.category_id(parent) if parent else None,
        },
    )


async def _upsert_product(tx: Tx, product: dict[str, Any], currency: str, now: str) -> None:
    product_id = domain.product_id(product["sku"])
    # The category is looked up by slug: its id may predate the seed's deterministic ids.
    await tx.execute(
        "INSERT INTO products (id, sku, name, description, category_id, price, currency, image_url, active, "
        "created_at, updated_at) VALUES (:id, :sku, :name, :description, "
        "(SELECT id FROM categories WHERE slug = :category), :price, :currency, :image_url, 1, :now, :now) "
        "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, description = excluded.description, "
        "category_id = excluded.category_id, price = excluded.price, currency = excluded.currency, active = 1, "
        "updated_at = excluded.updated_at",
        {
            "id": product_id,
            "sku": product["sku"],
            "name": product["name"],
            "description": product["description"],
            "category": product["category"],
            "price": product["price"],
            "currency": currency,
            "image_url": domain.image_path(product_id),
            "now": now,
        },
    )


async def _create_stock(tx: Tx, sku: str, units: int) -> int:
    return await tx.execute(
        "INSERT INTO stock (sku, on_hand, reserved, sold, received, low_threshold) "
        "VALUES (:sku, :units, 0, 0, :units, :low) ON CONFLICT (sku) DO NOTHING",
        {"sku": sku, "units": units, "low": LOW_THRESHOLD},
    )


async def _reset_stock(tx: Tx, sku: str, units: int) -> int:
    # Reserved and sold units stay where they are (live reservations must still commit or release);
    # the restock counts as received, so on_hand + reserved + sold == received still holds.
    return await tx.execute(
        "UPDATE stock SET on_hand = :units, received = :units + reserved + sold WHERE sku = :sku",
        {"sku": sku, "units": units},
    )


async def seed(settings: ProductsSettings, *, reset_stock: bool = False) -> SeedReport:
    """What ``python -m microshop_products seed`` runs: migrate the service's database, then seed it."""
    from microshop_products.app import MIGRATIONS

    database = await dbmod.connect(settings.resolved_database_url())
    try:
        await database.migrate(settings.service_name, MIGRATIONS)
        return await seed_catalog(database, reset_stock=reset_stock)
    finally:
        await database.close()

"""The demo catalog and its loader: believable, deterministic, idempotent, and runnable from the command line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from microshop_products.seed import load_catalog, seed_catalog, starting_stock
from microshop_products.testing import ServiceFactory


def test_demo_catalog_is_big_and_varied_enough() -> None:
    catalog = load_catalog()
    products, categories = catalog["products"], catalog["categories"]
    assert len(products) >= 60
    assert len({p["category"] for p in products}) >= 6
    assert catalog["currency"] == "EUR"
    assert len({p["sku"] for p in products}) == len(products)
    assert len({p["name"] for p in products}) == len(products)
    slugs = [c["slug"] for c in categories]
    assert {p["category"] for p in products} <= set(slugs)
    for category in categories:  # parents are listed before their children
        assert category["parent"] is None or slugs.index(category["parent"]) < slugs.index(category["slug"])
    for product in products:
        assert product["price"] > 0 and product["name"] and len(product["description"]) > 20, product


def test_starting_stock_is_deterministic_and_in_range() -> None:
    units = [starting_stock(p["sku"]) for p in load_catalog()["products"]]
    assert all(20 <= n <= 200 for n in units)
    assert units == [starting_stock(p["sku"]) for p in load_catalog()["products"]]
    assert len(set(units)) > 10


async def test_reseeding_keeps_stock_already_reserved_or_sold(make_service: ServiceFactory) -> None:
    async with make_service() as shop:
        sku = "COF-002"
        start = await shop.stock(sku)
        for order_id, action in (("o-1", "commit"), ("o-2", None)):
            body = {"order_id": order_id, "lines": [{"sku": sku, "quantity": 3}]}
            assert (await shop.client.post("/internal/v1/reservations", json=body)).status_code == 201
            if action:
                await shop.client.post(f"/internal/v1/reservations/{order_id}/{action}")
        await shop.db.execute("UPDATE products SET price = 1 WHERE sku = :sku", {"sku": sku})

        report = await seed_catalog(shop.db)
        assert (report.products, report.stock_created, report.stock_reset) == (len(load_catalog()["products"]), 0, 0)
        assert await shop.stock(sku) == {
            "on_hand": start["on_hand"] - 6,
            "reserved": 3,
            "sold": 3,
            "received": start["received"],
        }
        price = await shop.db.fetch("SELECT price FROM products WHERE sku = :sku", {"sku": sku})
        assert price[0]["price"] == 1150  # the catalog's price is restored
        count = await shop.db.fetch("SELECT COUNT(*) AS n FROM products")
        assert count[0]["n"] == len(load_catalog()["products"])

        await seed_catalog(shop.db, reset_stock=True)
        assert await shop.stock(sku) == {
            "on_hand": start["on_hand"],
            "reserved": 3,
            "sold": 3,
            "received": start["received"] + 6,
        }
        await shop.client.post("/internal/v1/reservations/o-2/release")


def test_seed_command_loads_the_catalog_into_the_services_database(tmp_path: Path) -> None:
    env = {**os.environ, "PRODUCTS_DATA_DIR": str(tmp_path), "PRODUCTS_LOG_JSON": "false"}
    env.pop("PRODUCTS_DATABASE_URL", None)
    for _ in range(2):  # the second run changes nothing
        result = subprocess.run(
            [sys.executable, "-m", "microshop_products", "seed"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    assert "stock created for 0 SKUs" in result.stdout
    with sqlite3.connect(tmp_path / "products.db") as conn:
        (products,) = conn.execute("SELECT COUNT(*) FROM products").fetchone()
        (unbalanced,) = conn.execute(
            "SELECT COUNT(*) FROM stock WHERE on_hand + reserved + sold <> received"
        ).fetchone()
    assert products == len(load_catalog()["products"])
    assert unbalanced == 0

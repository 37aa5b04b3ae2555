"""Helpers the products tests share: a running app with its database, and the stock invariants."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from microshop_kit.db import Database
from microshop_products.settings import ProductsSettings


@dataclass
class Service:
    """A running products app, its HTTP client and its database."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: ProductsSettings

    @property
    def db(self) -> Database:
        database: Database = self.app.state.kit.database
        return database

    async def stock(self, sku: str) -> dict[str, int]:
        rows = await self.db.fetch("SELECT on_hand, reserved, sold, received FROM stock WHERE sku = :sku", {"sku": sku})
        return {key: int(value) for key, value in rows[0].items()}

    async def set_on_hand(self, sku: str, units: int) -> None:
        """Restock or write off to exactly ``units`` on hand, keeping the books balanced."""
        await self.db.execute(
            "UPDATE stock SET on_hand = :units, received = :units + reserved + sold WHERE sku = :sku",
            {"sku": sku, "units": units},
        )

    async def events(self, type_: str) -> list[dict[str, Any]]:
        """Envelopes of one event type in the outbox, oldest first."""
        rows = await self.db.fetch("SELECT payload FROM outbox WHERE type = :type ORDER BY seq", {"type": type_})
        return [json.loads(row["payload"]) for row in rows]

    async def reservation_status(self, order_id: str) -> str | None:
        rows = await self.db.fetch("SELECT status FROM reservations WHERE order_id = :id", {"id": order_id})
        return str(rows[0]["status"]) if rows else None


async def check_stock_invariants(db: Database) -> None:
    """Per SKU: on_hand + reserved + sold == received, nothing negative, and the reserved and sold buckets
    equal what the reservations hold (these tests never start with units already sold)."""
    broken = await db.fetch(
        "SELECT sku FROM stock WHERE on_hand + reserved + sold <> received OR on_hand < 0 OR reserved < 0 OR sold < 0"
    )
    assert broken == [], f"stock not conserved for {broken}"
    rows = await db.fetch(
        "SELECT s.sku, s.reserved, s.sold, "
        "COALESCE((SELECT SUM(l.quantity) FROM reservation_lines l JOIN reservations r ON r.order_id = l.order_id "
        "WHERE l.sku = s.sku AND r.status = 'reserved'), 0) AS held, "
        "COALESCE((SELECT SUM(l.quantity) FROM reservation_lines l JOIN reservations r ON r.order_id = l.order_id "
        "WHERE l.sku = s.sku AND r.status = 'committed'), 0) AS committed "
        "FROM stock s"
    )
    for row in rows:
        assert (row["reserved"], row["sold"]) == (row["held"], row["committed"]), f"stock of {row['sku']}: {row}"


#: ``make_service(catalog, **settings_overrides)``: an ``async with`` giving a running Service.
ServiceFactory = Callable[..., AbstractAsyncContextManager[Service]]

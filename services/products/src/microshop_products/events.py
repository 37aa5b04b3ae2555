"""Events the products service publishes (through the kit's outbox); it consumes none yet."""

from __future__ import annotations

from microshop_contracts import ProductCreated, ProductUpdated, StockLow


def stock_low(sku: str, on_hand: int, threshold: int) -> StockLow:
    """On-hand stock of a SKU fell below its threshold: time to restock."""
    return StockLow(sku=sku, available=on_hand, threshold=threshold)


def product_created(product_id: str, sku: str, name: str, price: int, currency: str) -> ProductCreated:
    return ProductCreated(product_id=product_id, sku=sku, name=name, price=price, currency=currency)


def product_updated(product_id: str, sku: str, name: str, price: int, currency: str) -> ProductUpdated:
    """The name or price changed (what the orders service shows and charges)."""
    return ProductUpdated(product_id=product_id, sku=sku, name=name, price=price, currency=currency)

"""Events the products service publishes (through the kit's outbox); it consumes none yet."""

from __future__ import annotations

from microshop_contracts import StockLow


def stock_low(sku: str, on_hand: int, threshold: int) -> StockLow:
    """On-hand stock of a SKU fell below its threshold: time to restock."""
    return StockLow(sku=sku, available=on_hand, threshold=threshold)

"""The payments service's upkeep loops: expire abandoned customer steps, prune old idempotency records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from microshop_kit.log import get_logger
from microshop_payments.handlers import PaymentsService
from microshop_payments.provider import ProviderError

log = get_logger("microshop.payments")


async def expiry_loop(service: PaymentsService) -> None:
    """Expire abandoned customer steps, for the life of the service."""
    while True:
        try:
            expired = await service.expire_actions()
            if expired:
                log.info("payments waiting for the customer expired", count=expired)
        except ProviderError as exc:
            log.warning("expiring payments waiting for the customer failed; retrying later", error=str(exc))
        except Exception:  # the outermost upkeep loop: a database outage must not end it
            log.exception("expiring payments waiting for the customer failed; retrying later")
        await asyncio.sleep(service.settings.expiry_interval_seconds)


async def prune(service: PaymentsService) -> None:
    """Delete finished idempotency records past their TTL (the payment row keeps answering after)."""
    ttl = timedelta(hours=service.settings.idempotency_ttl_hours)
    removed = await service.store.prune_keys((datetime.now(UTC) - ttl).isoformat())
    if removed:
        log.info("idempotency records pruned", count=removed)

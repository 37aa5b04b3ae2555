"""The payments service app: routes, migrations, the provider adapter and the upkeep loops (idempotency, expiry)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app, every
from microshop_payments import api, upkeep
from microshop_payments.handlers import PaymentsService
from microshop_payments.provider import SimulatedProvider
from microshop_payments.settings import PaymentsSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    """Build the payments app. The service object lives on ``app.state.payments``; its ``provider`` is the
    seam where a real provider adapter (or a test's held one) goes."""
    settings = settings or PaymentsSettings()

    async def start(kit: Kit) -> None:
        if kit.bus is None:
            raise RuntimeError("payments publishes events: it needs the kit's bus (outbox)")
        service = PaymentsService(kit.database, SimulatedProvider(), kit.bus.outbox, settings)
        app.state.payments = service
        kit.background(
            every(service.settings.prune_interval_seconds, lambda: upkeep.prune(service), "idempotency-prune"),
            "idempotency-prune",
        )
        kit.background(upkeep.expiry_loop(service), "action-expiry")

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop payments",
            # Routes are matched in order: the internal ones (a checkout's calls) first; no path of theirs overlaps
            # a public one (/internal/v1 against /api/v1).
            routers=[api.internal, api.router],
            migrations=MIGRATIONS,
            startup=[start],
        ),
    )
    return app

"""Wiring of the orders service: stores, upstream clients, the saga, its recovery loop and the payment events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app, every
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.bus import Handler
from microshop_kit.http import ServiceClient
from microshop_kit.log import get_logger
from microshop_orders.api import router
from microshop_orders.events import PaymentEvents
from microshop_orders.handlers import Orders
from microshop_orders.saga import Saga, SagaTimings, Upstreams, recovery_loop
from microshop_orders.settings import OrdersSettings
from microshop_orders.store import CartStore, OrderStore, now

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger("microshop.orders")


async def prune_keys(store: OrderStore, ttl: timedelta) -> None:
    """Forget finished Idempotency-Keys older than ``ttl`` (the table would otherwise keep every key every
    customer ever sent)."""
    removed = await store.prune_keys(now() - ttl)
    if removed:
        log.info("idempotency keys pruned", count=removed)


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    app: FastAPI

    def resume(order_id: str) -> None:
        # Payment events may arrive before start() has built the saga; the recovery loop then finds the order.
        orders: Orders | None = getattr(app.state, "orders", None)
        if orders is not None:
            orders.saga.start(order_id)

    def handlers(kit: Kit) -> dict[str, Handler]:
        return dict(PaymentEvents(OrderStore(kit.database), resume).handlers())

    async def start(kit: Kit) -> None:
        def client(name: str, url: str, retries: int = 2) -> ServiceClient:
            return ServiceClient(
                name,
                url,
                kit.http,
                timeout=settings.upstream_timeout,
                retries=retries,
                breaker=CircuitBreaker(open_seconds=settings.breaker_open_seconds),
            )

        upstreams = Upstreams(
            users=client("users", settings.users_url),
            products=client("products", settings.products_url),
            # The saga retries payments itself (bounded, with backoff): a provider's processing error must not
            # be multiplied by the client's retries, nor trip the breaker three times as fast.
            payments=client("payments", settings.payments_url, retries=0),
        )
        assert kit.bus is not None
        store = OrderStore(kit.database)
        saga = Saga(
            kit.database,
            store,
            upstreams,
            kit.bus.outbox,
            timings=SagaTimings(
                timeout_seconds=settings.saga_timeout_seconds,
                lease_seconds=settings.lease_seconds,
                action_timeout_seconds=settings.action_timeout_seconds,
                payment_poll_seconds=settings.payment_poll_seconds,
                payment_attempts=settings.payment_attempts,
            ),
            hold_at=settings.fault_hold_at,
        )
        orders = Orders(
            carts=CartStore(kit.database),
            orders=store,
            saga=saga,
            products=upstreams.products,
            payments=upstreams.payments,
            outbox=kit.bus.outbox,
            checkout_budget=settings.checkout_budget_seconds,
        )
        saga.on_final = orders.settle
        app.state.orders = orders
        kit.background(recovery_loop(saga, store, settings.recovery_interval_seconds), "saga-recovery")
        ttl = timedelta(hours=settings.idempotency_ttl_hours)
        kit.background(
            every(settings.prune_interval_seconds, lambda: prune_keys(store, ttl), "idempotency-prune"),
            "idempotency-prune",
        )

    async def stop(kit: Kit) -> None:
        orders: Orders = app.state.orders
        for task in list(orders.saga.running):
            task.cancel()

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop orders",
            routers=[router],
            migrations=MIGRATIONS,
            handlers=handlers,
            startup=[start],
            shutdown=[stop],
        ),
    )
    return app

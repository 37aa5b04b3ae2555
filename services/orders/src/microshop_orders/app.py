"""Wiring of the orders service: stores, upstream clients, the saga and its recovery loop."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.http import ServiceClient
from microshop_orders.api import router
from microshop_orders.handlers import Orders
from microshop_orders.saga import Saga, Upstreams, recovery_loop
from microshop_orders.settings import OrdersSettings
from microshop_orders.store import CartStore, OrderStore

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    app: FastAPI

    async def start(kit: Kit) -> None:
        def client(name: str, url: str) -> ServiceClient:
            return ServiceClient(
                name,
                url,
                kit.http,
                timeout=settings.upstream_timeout,
                breaker=CircuitBreaker(open_seconds=settings.breaker_open_seconds),
            )

        upstreams = Upstreams(
            users=client("users", settings.users_url),
            products=client("products", settings.products_url),
            payments=client("payments", settings.payments_url),
        )
        assert kit.bus is not None
        store = OrderStore(kit.database)
        saga = Saga(
            kit.database,
            store,
            upstreams,
            kit.bus.outbox,
            timeout_seconds=settings.saga_timeout_seconds,
            lease_seconds=settings.lease_seconds,
        )
        orders = Orders(
            carts=CartStore(kit.database),
            orders=store,
            saga=saga,
            products=upstreams.products,
            checkout_budget=settings.checkout_budget_seconds,
        )
        saga.on_finished = orders.finished
        app.state.orders = orders
        kit.background(recovery_loop(saga, store, settings.recovery_interval_seconds), "saga-recovery")

    async def stop(kit: Kit) -> None:
        orders: Orders = app.state.orders
        for task in list(orders.running):
            task.cancel()

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop orders", routers=[router], migrations=MIGRATIONS, startup=[start], shutdown=[stop]
        ),
    )
    return app

"""Wiring of the gateway: route table, balanced upstreams, the proxy route, readiness and security headers."""

from __future__ import annotations

from fastapi import FastAPI

from microshop_gateway.api import Gateway, router
from microshop_gateway.domain import Balancer, RouteTable
from microshop_gateway.proxy import Proxy
from microshop_gateway.readiness import upstream_check
from microshop_gateway.security import SecurityHeadersMiddleware
from microshop_gateway.settings import GatewaySettings
from microshop_kit.app import Kit, ServiceSpec, create_service_app


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    upstreams = settings.upstreams()
    app: FastAPI

    async def start(kit: Kit) -> None:
        balancers = {name: Balancer(urls, cooldown=settings.failure_cooldown) for name, urls in upstreams.items()}
        proxy = Proxy(
            kit.http,
            balancers,
            connect_timeout=settings.connect_timeout,
            max_response_bytes=settings.max_response_bytes,
            trust_forwarded=settings.trust_forwarded_headers,
        )
        table = RouteTable(settings.routes, settings.blocked_prefixes, settings.reserved_prefixes)
        app.state.gateway = Gateway(routes=table, proxy=proxy)

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop gateway",
            routers=[router],
            migrations=None,
            uses_bus=False,
            startup=[start],
            ready_checks=[upstream_check(name, urls, settings.ready_timeout) for name, urls in upstreams.items()],
        ),
    )
    app.add_middleware(SecurityHeadersMiddleware)
    return app

"""Wiring of the gateway: route table, balanced upstreams, the proxy path, readiness and security headers."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from microshop_gateway.api import Gateway, ProxyMiddleware
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
            balancers,
            connect_timeout=settings.connect_timeout,
            max_response_bytes=settings.max_response_bytes,
            trust_forwarded=settings.trust_forwarded_headers,
        )
        table = RouteTable(settings.routes, settings.blocked_prefixes, settings.reserved_prefixes)
        app.state.gateway = Gateway(routes=table, proxy=proxy)

    async def stop(kit: Kit) -> None:
        gateway: Gateway | None = getattr(app.state, "gateway", None)
        if gateway is not None:
            gateway.proxy.close()

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop gateway",
            routers=[],
            migrations=None,
            uses_bus=False,
            startup=[start],
            shutdown=[stop],
            ready_checks=[upstream_check(name, urls, settings.ready_timeout) for name, urls in upstreams.items()],
            # A shared microcache of public answers (catalog pages) for GATEWAY_RESPONSE_CACHE_SECONDS at most:
            # only answers marked "Cache-Control: public" to requests without credentials (kit/cache.py).
            cached_prefixes=("/",),
            cache_cleared_by_writes=False,
        ),
    )
    # Innermost of the user middleware: inside the kit's (request id, limits, metrics, log) and the response
    # cache, in front of the router, which serves only the gateway's own paths.
    app.user_middleware.append(Middleware(ProxyMiddleware))
    app.add_middleware(SecurityHeadersMiddleware)
    return app

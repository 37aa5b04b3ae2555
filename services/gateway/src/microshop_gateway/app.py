"""Wiring of the gateway: route table, upstreams (balancer, breaker, retry budget), rate limits, readiness
probes, the proxy path, CORS, API docs and security headers."""

from __future__ import annotations

import functools

from fastapi import FastAPI
from starlette.middleware import Middleware

from microshop_gateway.api import ClientLimits, Gateway, ProxyMiddleware
from microshop_gateway.cors import CorsMiddleware, CorsPolicy, CorsPreflightMiddleware
from microshop_gateway.domain import Balancer, RetryBudget, RouteTable
from microshop_gateway.limits import MemoryStore, RateLimiter, RedisStore, Store
from microshop_gateway.metrics import GatewayMetrics
from microshop_gateway.openapi import ApiDocs, docs_router
from microshop_gateway.proxy import Proxy, RetryPolicy, Upstream
from microshop_gateway.readiness import Readiness
from microshop_gateway.security import SecurityHeadersMiddleware
from microshop_gateway.settings import GatewaySettings
from microshop_kit.app import Kit, KitMiddleware, ServiceSpec, create_service_app
from microshop_kit.breaker import CircuitBreaker


def _upstreams(settings: GatewaySettings) -> dict[str, Upstream]:
    return {
        name: Upstream(
            name=name,
            balancer=Balancer(urls, cooldown=settings.failure_cooldown),
            breaker=CircuitBreaker(
                failure_ratio=settings.breaker_failure_ratio,
                min_calls=settings.breaker_min_calls,
                window_size=settings.breaker_window_size,
                window_seconds=settings.breaker_window_seconds,
                open_seconds=settings.breaker_open_seconds,
                half_open_probes=settings.breaker_half_open_probes,
            ),
            retries=RetryBudget(
                ratio=settings.retry_budget_ratio,
                window=settings.retry_budget_seconds,
                min_per_second=settings.retry_budget_min_per_second,
            ),
        )
        for name, urls in settings.upstreams().items()
    }


def _limiter(settings: GatewaySettings) -> RateLimiter | None:
    if not settings.rate_limiting:
        return None
    store: Store = MemoryStore()
    if settings.redis_url:
        store = RedisStore(settings.redis_url, prefix=settings.redis_key_prefix, timeout=settings.redis_timeout)
    return RateLimiter(settings.rate_limits, store, settings.rate_limit_exempt_networks)


def _build(settings: GatewaySettings, kit: Kit) -> Gateway:
    upstreams = _upstreams(settings)
    metrics = GatewayMetrics(kit.metrics)
    for upstream in upstreams.values():
        metrics.watch_circuit(upstream.name, upstream.breaker)
        for url in upstream.balancer.urls:
            metrics.watch_instance(upstream.name, url, functools.partial(upstream.balancer.is_ready, url))
    proxy = Proxy(
        upstreams,
        metrics,
        retry=RetryPolicy(attempts=settings.retry_attempts, backoff=settings.retry_backoff_seconds),
        connect_timeout=settings.connect_timeout,
        max_response_bytes=settings.max_response_bytes,
        trust_forwarded=settings.trust_forwarded_headers,
    )
    table = RouteTable(settings.routes, settings.blocked_prefixes, settings.reserved_prefixes)
    return Gateway(
        routes=table,
        proxy=proxy,
        readiness=Readiness(upstreams, kit.http, interval=settings.probe_interval, timeout=settings.ready_timeout),
        docs=ApiDocs(upstreams, table, kit.http, ttl=settings.openapi_cache_seconds, timeout=settings.ready_timeout),
        metrics=metrics,
        limiter=_limiter(settings),
        client=ClientLimits(
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
            body_timeout=settings.client_body_timeout,
        ),
    )


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app: FastAPI

    async def start(kit: Kit) -> None:
        gateway = _build(settings, kit)
        app.state.gateway = gateway
        # One round before serving, so /readyz and the rotation start from what the instances say.
        await gateway.readiness.probe_all()
        kit.background(gateway.readiness.run(), name="gateway-readiness")

    async def stop(kit: Kit) -> None:
        gateway: Gateway | None = getattr(app.state, "gateway", None)
        if gateway is not None:
            gateway.proxy.close()
            if gateway.limiter is not None:
                await gateway.limiter.close()

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop gateway",
            routers=[docs_router()],
            migrations=None,
            uses_bus=False,
            startup=[start],
            shutdown=[stop],
            # A shared microcache of public answers (catalog pages) for GATEWAY_RESPONSE_CACHE_SECONDS at most:
            # only answers marked "Cache-Control: public" to requests without credentials (kit/cache.py).
            cached_prefixes=("/",),
            cache_cleared_by_writes=False,
        ),
    )
    # Innermost of the user middleware: inside the kit's (request id, limits, metrics, log) and the response
    # cache, in front of the router, which serves only the gateway's own paths.
    app.user_middleware.append(Middleware(ProxyMiddleware))
    if settings.cors_origins:
        policy = CorsPolicy(
            origins=settings.cors_origins,
            methods=settings.cors_allow_methods,
            headers=settings.cors_allow_headers,
            expose=settings.cors_expose_headers,
            credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
        )
        # Preflights are answered inside the kit's middleware (logged and counted) and outside the response
        # cache; every other answer is marked outside it, so the kit's own 413 and 500 problems are marked too
        # (and a kept answer is marked for each request's own origin).
        kit_at = next(i for i, m in enumerate(app.user_middleware) if getattr(m, "cls", None) is KitMiddleware)
        app.user_middleware.insert(kit_at + 1, Middleware(CorsPreflightMiddleware, policy=policy))
        app.user_middleware.insert(kit_at, Middleware(CorsMiddleware, policy=policy))
    app.add_middleware(SecurityHeadersMiddleware)
    return app

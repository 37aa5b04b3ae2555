"""Settings of the gateway (env prefix GATEWAY_): the route table as data, upstream addresses, and the limits
(rate limits, breakers, retries, readiness probes, CORS, header limits) described in docs/gateway.md."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from microshop_kit.settings import ServiceSettings

Auth = Literal["public", "token", "optional"]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RouteSpec(BaseModel):
    """One row of the route table: requests whose path is under ``prefix`` go to ``service``.

    ``exact`` matches the prefix path only; ``methods`` (upper case) limits the row to those methods, so
    ``POST /api/v1/users`` (sign up) can be public while the rest of ``/api/v1/users`` needs a token.
    ``rate_limit`` names the budget class (a key of ``GatewaySettings.rate_limits``) its requests count against.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(pattern=r"^/")
    service: str = Field(min_length=1)
    auth: Auth = "token"
    timeout: float = Field(default=5.0, gt=0, le=300)
    methods: tuple[str, ...] | None = None
    exact: bool = False
    rate_limit: str = Field(default="default", min_length=1)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        upper = tuple(method.upper() for method in value)
        unknown = [method for method in upper if method not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {unknown}; use {list(HTTP_METHODS)}")
        return upper


def _route(prefix: str, service: str, auth: Auth, **extra: object) -> RouteSpec:
    return RouteSpec.model_validate({"prefix": prefix, "service": service, "auth": auth, **extra})


class Budget(BaseModel):
    """A token bucket: ``burst`` requests at once (default ``requests``), refilled at ``requests`` per
    ``seconds``. Kept as one number per key (GCRA), in memory or in Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=1)
    seconds: float = Field(gt=0, le=86_400)
    burst: int | None = Field(default=None, ge=1)

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate."""
        return self.seconds / self.requests

    @property
    def capacity(self) -> int:
        return self.burst or self.requests


class RateLimitClass(BaseModel):
    """The budgets of one class of routes: per client address and per verified account (None: unlimited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_address: Budget | None = None
    per_account: Budget | None = None


DEFAULT_RATE_LIMITS: dict[str, RateLimitClass] = {
    "default": RateLimitClass(
        per_address=Budget(requests=300, seconds=10), per_account=Budget(requests=300, seconds=10)
    ),
    # Sign-in, sign-up and token refresh carry no verified account; users locks an account out by itself.
    "auth": RateLimitClass(per_address=Budget(requests=20, seconds=60)),
    "checkout": RateLimitClass(
        per_address=Budget(requests=60, seconds=60), per_account=Budget(requests=30, seconds=60)
    ),
}


# First match wins, so the narrow rows come before the broad ones.
DEFAULT_ROUTES: tuple[RouteSpec, ...] = (
    _route("/api/v1/users", "users", "public", methods=("POST",), exact=True, rate_limit="auth"),
    _route("/api/v1/users", "users", "token"),
    _route("/api/v1/auth", "users", "public", rate_limit="auth"),
    _route("/api/v1/admin/users", "users", "token"),
    _route("/api/v1/admin/products", "products", "token"),
    _route("/api/v1/admin/stock", "products", "token"),
    _route("/api/v1/admin/orders", "orders", "token"),
    _route("/.well-known/jwks.json", "users", "public", exact=True),
    _route("/api/v1/products", "products", "public"),
    _route("/api/v1/categories", "products", "public"),
    _route("/api/v1/availability", "products", "public"),
    _route("/api/v1/cart", "orders", "token"),
    # A checkout runs the whole saga.
    _route("/api/v1/orders", "orders", "token", methods=("POST",), exact=True, timeout=15.0, rate_limit="checkout"),
    _route("/api/v1/orders", "orders", "token", timeout=15.0),
    _route("/api/v1/payment-methods", "payments", "token"),
    _route("/api/v1/payments", "payments", "token"),
    _route("/api/v1/notifications", "notifications", "token"),
    _route("/", "storefront", "optional"),
)


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    service_name: str = "gateway"
    port: int = 8000
    #: The door from outside keeps granian: it times out a slowly sent request head and refuses oversized ones
    #: (docs/gateway.md); the services behind the gateway run on uvicorn (the kit's default, cheaper per request).
    http_server: Literal["uvicorn", "granian"] = "granian"
    #: Upstream base URLs; a comma-separated list means several instances, used round-robin.
    users_url: str = "http://127.0.0.1:8101"
    products_url: str = "http://127.0.0.1:8102"
    orders_url: str = "http://127.0.0.1:8103"
    payments_url: str = "http://127.0.0.1:8104"
    notifications_url: str = "http://127.0.0.1:8105"
    storefront_url: str = "http://127.0.0.1:8010"
    #: The route table (JSON in GATEWAY_ROUTES); first match wins.
    routes: tuple[RouteSpec, ...] = DEFAULT_ROUTES
    #: Paths under these prefixes are never proxied, whatever the table says.
    blocked_prefixes: tuple[str, ...] = ("/internal",)
    #: Paths under these prefixes that no explicit row matches are 404 (never sent to the catch-all row).
    reserved_prefixes: tuple[str, ...] = ("/api", "/internal", "/.well-known")
    #: Largest upstream answer passed on; a larger one is a 502.
    max_response_bytes: int = Field(default=10 * 1_048_576, ge=1024)
    #: Time to open a connection to an upstream: a dead host fails fast instead of using the whole timeout.
    connect_timeout: float = Field(default=1.0, gt=0)
    #: How long an instance whose last call failed to connect is skipped by the round robin.
    failure_cooldown: float = Field(default=3.0, ge=0)
    #: Timeout of one upstream /readyz probe in the gateway's own readiness check.
    ready_timeout: float = Field(default=1.0, gt=0)
    #: Keep an incoming X-Forwarded-For/-Proto (only behind a trusted proxy); otherwise they are replaced.
    #: When kept, the client address for rate limits is the last X-Forwarded-For entry (the one the proxy added).
    trust_forwarded_headers: bool = False

    # ------------------------------------------------------------------------------------------ rate limits
    #: Whether requests count against the budgets at all.
    rate_limiting: bool = True
    #: Budget classes by name (JSON in GATEWAY_RATE_LIMITS); every route's ``rate_limit`` must name one.
    rate_limits: dict[str, RateLimitClass] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    #: Client networks never limited per address (comma-separated CIDRs). Loopback by default: a client seen
    #: as 127.0.0.1 is the local run, its tests, or a proxy on the same host (where every client would share
    #: one budget). Per-account budgets still apply. Set it empty when clients really connect from loopback.
    rate_limit_exempt_networks: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.0/8", "::1/128")
    #: ``redis://host:6379/0``: budgets shared by every gateway process through Redis; empty keeps them in
    #: memory (per process). While Redis is unreachable requests are let through (fail open, logged).
    redis_url: str | None = None
    #: Prefix of the Redis keys (several platforms or tests can share one Redis).
    redis_key_prefix: str = "microshop:gateway:rl:"
    #: Longest wait for Redis on a request; past it the request is let through.
    redis_timeout: float = Field(default=0.1, gt=0, le=5)

    # ------------------------------------------------------------------------------- breakers and retries
    #: A service's circuit opens when at least ``breaker_min_calls`` of its last ``breaker_window_size``
    #: requests (within ``breaker_window_seconds``) were recorded and this share of them failed.
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=10, ge=1)
    breaker_window_size: int = Field(default=50, ge=1)
    breaker_window_seconds: float = Field(default=10.0, gt=0)
    #: How long an open circuit refuses at once before half-open probes are let through.
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    breaker_half_open_probes: int = Field(default=2, ge=1)
    #: Extra attempts of a GET or HEAD whose instance could not be reached or broke its answer off.
    retry_attempts: int = Field(default=1, ge=0, le=5)
    #: Retries may add at most this share to a service's requests over ``retry_budget_seconds`` ...
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_seconds: float = Field(default=10.0, gt=0)
    #: ... plus this many retries per second, so a quiet service can still retry.
    retry_budget_min_per_second: float = Field(default=1.0, ge=0)
    #: A retry waits a random time up to this (full jitter, doubling per attempt).
    retry_backoff_seconds: float = Field(default=0.02, ge=0)

    # ----------------------------------------------------------------------------------- readiness probes
    #: How often each instance's /readyz is probed; an instance failing it leaves the rotation until it passes.
    probe_interval: float = Field(default=2.0, gt=0)

    # ------------------------------------------------------------------------------------ client requests
    #: Browser origins allowed to call the API cross-origin (comma-separated, exact ``scheme://host[:port]``);
    #: empty: no CORS headers at all. A wildcard is refused.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    cors_allow_methods: Annotated[tuple[str, ...], NoDecode] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    cors_allow_headers: Annotated[tuple[str, ...], NoDecode] = (
        "authorization",
        "content-type",
        "idempotency-key",
        "if-none-match",
        "traceparent",
        "x-request-id",
    )
    cors_expose_headers: Annotated[tuple[str, ...], NoDecode] = (
        "etag",
        "idempotent-replayed",
        "location",
        "retry-after",
        "x-request-id",
    )
    #: Send ``Access-Control-Allow-Credentials: true`` (cookies); the origin is always echoed, never ``*``.
    cors_allow_credentials: bool = False
    cors_max_age: int = Field(default=600, ge=0, le=86_400)
    #: More request header lines than this, or more bytes of names and values, is a 431.
    max_header_count: int = Field(default=64, ge=8, le=1000)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    #: A client that has not sent its whole request body within this many seconds gets a 408.
    client_body_timeout: float = Field(default=10.0, gt=0)

    # ------------------------------------------------------------------------------------------ API docs
    #: How long the merged OpenAPI document is kept before the services' documents are fetched again.
    openapi_cache_seconds: float = Field(default=60.0, ge=0)

    @field_validator(
        "rate_limit_exempt_networks",
        "cors_origins",
        "cors_allow_methods",
        "cors_allow_headers",
        "cors_expose_headers",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("rate_limit_exempt_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"rate_limit_exempt_networks: {network!r} is not a CIDR network ({exc})") from exc
        return value

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if "*" in origin or not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin:
                raise ValueError(
                    f"cors_origins: {origin!r} is not an explicit origin such as 'https://shop.example' "
                    "(no wildcard, no path, no trailing slash)"
                )
        return tuple(origin.lower() for origin in value)

    @field_validator("cors_allow_methods")
    @classmethod
    def _cors_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(method.upper() for method in value)
        unknown = [method for method in upper if method not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"cors_allow_methods: unknown HTTP method(s) {unknown}; use {list(HTTP_METHODS)}")
        return upper

    @field_validator("cors_allow_headers", "cors_expose_headers")
    @classmethod
    def _lower_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.lower() for name in value)

    @model_validator(mode="after")
    def _every_route_has_an_upstream(self) -> GatewaySettings:
        upstreams = self.upstreams()
        for route in self.routes:
            if route.service not in upstreams:
                raise ValueError(
                    f"route {route.prefix!r} names service {route.service!r}, which has no upstream URL; "
                    f"known services: {sorted(upstreams)}"
                )
        for service, urls in upstreams.items():
            bad = [url for url in urls if not url.startswith(("http://", "https://"))]
            if not urls or bad:
                raise ValueError(f"{service}_url must list http(s) URLs, got {bad or urls!r}")
        for route in self.routes:
            if route.rate_limit not in self.rate_limits:
                raise ValueError(
                    f"route {route.prefix!r} names rate-limit class {route.rate_limit!r}, which is not in "
                    f"rate_limits; known classes: {sorted(self.rate_limits)}"
                )
        if self.breaker_window_size < self.breaker_min_calls:
            raise ValueError(
                f"breaker_window_size ({self.breaker_window_size}) must be >= breaker_min_calls "
                f"({self.breaker_min_calls})"
            )
        return self

    def upstreams(self) -> dict[str, list[str]]:
        """Instance base URLs per service name."""
        raw = {
            "users": self.users_url,
            "products": self.products_url,
            "orders": self.orders_url,
            "payments": self.payments_url,
            "notifications": self.notifications_url,
            "storefront": self.storefront_url,
        }
        return {name: [u.strip().rstrip("/") for u in value.split(",") if u.strip()] for name, value in raw.items()}

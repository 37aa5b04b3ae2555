"""Settings of the gateway (env prefix GATEWAY_): the route table as data and the upstream addresses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings

Auth = Literal["public", "token", "optional"]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RouteSpec(BaseModel):
    """One row of the route table: requests whose path is under ``prefix`` go to ``service``.

    ``exact`` matches the prefix path only; ``methods`` (upper case) limits the row to those methods, so
    ``POST /api/v1/users`` (sign up) can be public while the rest of ``/api/v1/users`` needs a token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(pattern=r"^/")
    service: str = Field(min_length=1)
    auth: Auth = "token"
    timeout: float = Field(default=5.0, gt=0, le=300)
    methods: tuple[str, ...] | None = None
    exact: bool = False

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


# First match wins, so the narrow rows come before the broad ones.
DEFAULT_ROUTES: tuple[RouteSpec, ...] = (
    _route("/api/v1/users", "users", "public", methods=("POST",), exact=True),
    _route("/api/v1/users", "users", "token"),
    _route("/api/v1/auth", "users", "public"),
    _route("/api/v1/admin/users", "users", "token"),
    _route("/api/v1/admin/products", "products", "token"),
    _route("/api/v1/admin/stock", "products", "token"),
    _route("/api/v1/admin/orders", "orders", "token"),
    _route("/.well-known/jwks.json", "users", "public", exact=True),
    _route("/api/v1/products", "products", "public"),
    _route("/api/v1/categories", "products", "public"),
    _route("/api/v1/availability", "products", "public"),
    _route("/api/v1/cart", "orders", "token"),
    _route("/api/v1/orders", "orders", "token", timeout=15.0),  # a checkout runs the whole saga
    _route("/api/v1/payment-methods", "payments", "token"),
    _route("/api/v1/payments", "payments", "token"),
    _route("/api/v1/notifications", "notifications", "token"),
    _route("/", "storefront", "optional"),
)


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    service_name: str = "gateway"
    port: int = 8000
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
    trust_forwarded_headers: bool = False

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

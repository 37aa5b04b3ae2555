"""Settings of the storefront (env prefix STOREFRONT_): where the gateway is, cookies, and how pages look."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class StorefrontSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STOREFRONT_", extra="ignore", frozen=True)

    service_name: str = "storefront"
    port: int = 8010
    #: The gateway: every call the storefront makes goes through its public API, as a browser's would.
    gateway_url: str = "http://127.0.0.1:8000"
    #: HTTP side of the local mail sink (the local run's "inbox" of every email the shop sent).
    mailbox_url: str = "http://127.0.0.1:8026"
    shop_name: str = Field(default="microshop", min_length=1, max_length=60)
    page_size: int = Field(default=12, ge=1, le=100)
    #: A page is better shown fast with an error than late: one upstream call never waits longer.
    upstream_timeout: float = Field(default=3.0, gt=0)
    #: Placing an order runs the whole checkout saga behind the gateway (its orders route allows 15 s).
    checkout_timeout: float = Field(default=20.0, gt=0)
    #: How long a payment decision waits for the order to settle before showing the order as "processing".
    settle_wait: float = Field(default=6.0, ge=0)
    #: Signs the CSRF tokens; when empty a random key is kept in ``data_dir/csrf.key`` (made on first start).
    #: Several instances behind one gateway must share it.
    csrf_secret: SecretStr | None = None
    #: Lifetime of the sign-in cookie (the refresh token inside it may run out earlier).
    session_days: int = Field(default=30, ge=1, le=365)
    #: ``auto``: cookies are ``Secure`` when the request came over TLS (``X-Forwarded-Proto: https``).
    secure_cookies: Literal["auto", "always", "never"] = "auto"

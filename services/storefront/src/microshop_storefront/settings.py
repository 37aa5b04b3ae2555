"""Settings of the storefront (env prefix STOREFRONT_): where the APIs it renders are, and how pages look."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class StorefrontSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STOREFRONT_", extra="ignore", frozen=True)

    service_name: str = "storefront"
    port: int = 8010
    products_url: str = "http://127.0.0.1:8102"
    #: HTTP side of the local mail sink (the local run's "inbox" of every email the shop sent).
    mailbox_url: str = "http://127.0.0.1:8026"
    shop_name: str = Field(default="microshop", min_length=1, max_length=60)
    page_size: int = Field(default=12, ge=1, le=100)
    #: A page is better shown fast with an error than late: one upstream call never waits longer.
    upstream_timeout: float = Field(default=3.0, gt=0)

"""Settings of the products service (env prefix PRODUCTS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class ProductsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTS_", extra="ignore", frozen=True)

    service_name: str = "products"
    port: int = 8102
    #: A reservation not committed within this many seconds is released by the sweeper (stock back on hand).
    reservation_ttl_seconds: float = Field(default=900.0, gt=0)
    #: How often the sweeper looks for expired reservations.
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    #: Most expired reservations released per sweep round (keeps each round's transactions short).
    sweep_batch: int = Field(default=100, ge=1)
    #: Cache lifetime of the public catalog reads, for browsers and the gateway.
    catalog_max_age_seconds: int = Field(default=30, ge=0)

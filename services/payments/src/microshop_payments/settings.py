"""Settings of the payments service (env prefix PAYMENTS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    service_name: str = "payments"
    port: int = 8104
    #: Finished idempotency records are kept at least this long (Stripe and the IETF draft: >= 24 h).
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    #: An in-flight key older than this belonged to a request that died (crash): a retry may take it over.
    #: Safe because every provider call is idempotent per order and every state change is conditional.
    idempotency_lease_seconds: float = Field(default=60.0, gt=0)
    #: How often expired idempotency records are pruned.
    prune_interval_seconds: float = Field(default=3600.0, gt=0)

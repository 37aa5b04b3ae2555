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
    #: How long a duplicate of an in-flight request waits for the first one's answer before a 409.
    idempotency_wait_seconds: float = Field(default=2.0, ge=0)
    #: How often expired idempotency records are pruned.
    prune_interval_seconds: float = Field(default=3600.0, gt=0)
    #: A payment waiting for the customer's 3-D Secure / PayPal answer longer than this is canceled
    #: (code ``action_expired``, payment.failed.v1). A backstop: orders cancels it first, after its own
    #: ORDERS_ACTION_TIMEOUT_SECONDS (900), so keep this longer.
    action_ttl_seconds: float = Field(default=1800.0, gt=0)
    #: How often payments waiting for the customer are checked for expiry.
    expiry_interval_seconds: float = Field(default=30.0, gt=0)

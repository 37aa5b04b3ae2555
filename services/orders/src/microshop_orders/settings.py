"""Settings of the orders service (env prefix ORDERS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", frozen=True)

    service_name: str = "orders"
    port: int = 8103
    users_url: str = "http://127.0.0.1:8101"
    products_url: str = "http://127.0.0.1:8102"
    payments_url: str = "http://127.0.0.1:8104"
    #: How long POST /orders waits for the saga before answering 202 with a Location to poll.
    checkout_budget_seconds: float = Field(default=8.0, gt=0)
    #: After this long an order still unable to progress (a service down) is compensated and rejected.
    saga_timeout_seconds: float = Field(default=120.0, gt=0)
    recovery_interval_seconds: float = Field(default=1.0, gt=0)
    #: A saga runner holds an order this long; another runner (recovery, a second instance) may take over after.
    lease_seconds: float = Field(default=30.0, gt=0)
    #: How long a tripped circuit breaker refuses calls to an upstream before a trial call.
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    #: How long a payment may wait for the customer (3-D Secure, PayPal approval) before the order is rejected
    #: and its stock released. Keep it below products' reservation TTL, or an approval may find the stock gone
    #: (the order is then refunded and rejected).
    action_timeout_seconds: float = Field(default=900.0, gt=0)
    #: While a payment waits for the customer, payments is asked for its status this often (the payment events
    #: normally resume the order first).
    payment_poll_seconds: float = Field(default=5.0, gt=0)
    #: Charge attempts on the provider's retryable processing error before the order is rejected.
    payment_attempts: int = Field(default=3, ge=1, le=10)
    #: Tests only: a saga point (``after:charge``, ``before:confirm`` ...) where every saga stops for good, so
    #: a test can kill the process exactly there. Never set outside the crash tests.
    fault_hold_at: str | None = None
    #: A finished Idempotency-Key replays its order's answer at least this long (Stripe and the IETF draft:
    #: >= 24 h); after that it is forgotten, and the same key would place a new order.
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    #: How often finished keys past their TTL are pruned.
    prune_interval_seconds: float = Field(default=3600.0, gt=0)
    max_cart_lines: int = Field(default=50, ge=1)
    max_quantity: int = Field(default=99, ge=1)

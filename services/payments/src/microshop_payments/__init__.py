"""microshop payments: card and PayPal methods, idempotent charges, refunds and a reconciling ledger."""

from microshop_payments.app import create_app
from microshop_payments.settings import PaymentsSettings

__all__ = ["PaymentsSettings", "create_app"]

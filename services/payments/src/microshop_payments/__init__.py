"""microshop_payments."""

"""microshop_orders."""

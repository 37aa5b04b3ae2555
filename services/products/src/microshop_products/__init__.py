"""microshop_products."""

"""microshop_gateway."""

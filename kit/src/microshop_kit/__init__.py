"""microshop_kit."""

"""microshop_contracts."""

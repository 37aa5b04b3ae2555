"""microshop_launcher."""

"""microshop_users."""

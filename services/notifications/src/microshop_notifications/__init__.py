"""microshop_notifications."""

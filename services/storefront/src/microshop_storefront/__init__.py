"""microshop_storefront."""

"""microshop_users: accounts, sign-in, JWT access tokens (EdDSA) with JWKS, rotating refresh tokens."""

from microshop_users.app import create_app
from microshop_users.settings import UsersSettings

__all__ = ["UsersSettings", "create_app"]

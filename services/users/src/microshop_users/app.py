"""The users service app: routes, migrations, signing keys and the password hasher."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_users import api
from microshop_users.addresses import AddressBook
from microshop_users.admin import Admin
from microshop_users.handlers import Accounts, Sessions
from microshop_users.passwords import PasswordHasher
from microshop_users.settings import UsersSettings
from microshop_users.tokens import KeyRing

MIGRATIONS = Path(__file__).parent / "migrations"


def key_ring(settings: UsersSettings) -> KeyRing:
    """The signing keys: the PEM setting when given, else the files in ``data_dir/keys`` (made if none)."""
    if settings.signing_key_pem is not None:
        return KeyRing.from_pem(settings.signing_key_pem.get_secret_value())
    return KeyRing.from_folder(settings.data_dir / "keys")


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    """Build the users app. Its use cases live on ``app.state``: ``accounts``, ``sessions``, ``addresses``
    and ``admin`` (their ``clock`` is the seam tests move time with)."""
    settings = settings or UsersSettings()

    async def start(kit: Kit) -> None:
        if kit.bus is None:
            raise RuntimeError("users publishes events: it needs the kit's bus (outbox)")
        hasher = PasswordHasher(
            memory_cost=settings.password_memory_cost, concurrency=settings.password_hash_concurrency
        )
        policy = settings.throttle_policy()
        app.state.accounts = Accounts(kit.database, hasher, kit.bus.outbox, policy=policy)
        app.state.sessions = Sessions(kit.database, hasher, key_ring(settings), settings)
        app.state.addresses = AddressBook(kit.database, limit=settings.max_addresses_per_user)
        app.state.admin = Admin(kit.database, policy)

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop users",
            # Routes are matched in order: the internal ones (a checkout's calls) first; no path of theirs overlaps
            # a public one (/internal/v1 against /api/v1).
            routers=[api.internal, api.router, api.admin],
            migrations=MIGRATIONS,
            startup=[start],
        ),
    )
    return app

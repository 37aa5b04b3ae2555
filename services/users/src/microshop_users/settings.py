"""Settings of the users service (env prefix USERS_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class UsersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", extra="ignore", frozen=True)

    service_name: str = "users"
    port: int = 8101
    #: Lifetime of an access token (JWT), in seconds.
    access_token_ttl: int = Field(default=900, ge=60, le=86_400)
    #: Lifetime of one refresh token, in seconds; each rotation issues a new one with a fresh lifetime.
    refresh_token_ttl: int = Field(default=14 * 86_400, ge=300)
    #: Ed25519 private key (PKCS#8 PEM). Unset: the newest ``data_dir/keys/users-signing-<kid>.pem`` signs,
    #: created on first start. Never commit a key to the repository.
    signing_key_pem: SecretStr | None = None
    #: argon2id memory in KiB; OWASP's floor for t=2, p=1 is 19 MiB (19456 KiB).
    password_memory_cost: int = Field(default=19_456, ge=19_456)
    #: Password hashes computed at once; each takes ``password_memory_cost`` of RAM, so this bounds memory
    #: (and CPU) under a burst of sign-ins instead of letting it grow with the request count.
    password_hash_concurrency: int = Field(default=4, ge=1, le=64)

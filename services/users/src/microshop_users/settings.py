"""Settings of the users service (env prefix USERS_)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings
from microshop_users.throttle import ThrottlePolicy


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
    #: Addresses one account may keep.
    max_addresses_per_user: int = Field(default=20, ge=1, le=1000)
    #: Sign-in throttling per account (unknown emails alike): this many failures are answered at once ...
    login_free_failures: int = Field(default=3, ge=1)
    #: ... then each further attempt waits this long (seconds), doubling with every failure ...
    login_delay_seconds: float = Field(default=1.0, ge=0)
    #: ... and this many consecutive failures lock the account ...
    login_lockout_failures: int = Field(default=10, ge=2)
    #: ... for this long (seconds; an admin can unlock sooner). A failure is forgotten after as long.
    login_lockout_seconds: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _lockout_after_the_free_failures(self) -> UsersSettings:
        if self.login_lockout_failures <= self.login_free_failures:
            raise ValueError(
                f"login_lockout_failures ({self.login_lockout_failures}) must be more than "
                f"login_free_failures ({self.login_free_failures})"
            )
        return self

    def throttle_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy(
            free_failures=self.login_free_failures,
            base_delay=self.login_delay_seconds,
            lockout_failures=self.login_lockout_failures,
            lockout_seconds=self.login_lockout_seconds,
        )

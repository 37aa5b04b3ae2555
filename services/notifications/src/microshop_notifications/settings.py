"""Settings of the notifications service (env prefix NOTIFICATIONS_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from microshop_kit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore", frozen=True)

    service_name: str = "notifications"
    port: int = 8105
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    #: Upgrade the connection with STARTTLS (required when true; plain SMTP when false, as the local sink).
    smtp_starttls: bool = False
    #: TLS from the first byte (SMTPS, usually port 465) instead of STARTTLS.
    smtp_implicit_tls: bool = False
    #: CA bundle (PEM) that signs the SMTP server's certificate, when it is not a public CA.
    smtp_ca_file: Path | None = None
    #: Verify the server's certificate and name (turn off only for a test server).
    smtp_validate_certs: bool = True
    #: Seconds for each step of an SMTP conversation (connect, each command, the data).
    smtp_timeout: float = Field(default=10.0, gt=0)
    #: SMTP connections kept open and used at once (messages are sent this many at a time).
    smtp_connections: int = Field(default=4, ge=1, le=64)
    #: A kept connection idle this long is closed rather than reused (servers drop idle clients).
    smtp_idle_seconds: float = Field(default=30.0, gt=0)
    mail_from: str = "microshop <shop@microshop.local>"
    #: Right-hand side of the Message-IDs this service makes.
    message_id_domain: str = "microshop.local"
    #: Where the links in emails point (the gateway in the local run).
    shop_url: str = "http://127.0.0.1:8000"
    #: Marketing mail only: the mailto: half of List-Unsubscribe (the other half is a link to the shop).
    unsubscribe_mailto: str = "unsubscribe@microshop.local"
    #: The users service: looks up a recipient the read model does not know (``/internal/v1/users/{id}``).
    users_url: str | None = "http://127.0.0.1:8101"
    #: SMS provider: ``simulated`` records every text in ``sms_outbox_file`` (the local run's "phone").
    sms_provider: Literal["simulated"] = "simulated"
    #: Where the simulated provider writes texts (JSON lines); default ``<data_dir>/sms.jsonl``.
    sms_outbox_file: Path | None = None
    #: The sender id texts carry.
    sms_from: str = "microshop"
    #: After this many failed attempts a message is marked dead (kept with its last error, never resent).
    send_max_attempts: int = Field(default=8, ge=1, le=100)
    #: Exponential backoff between attempts: base * 2**(attempt-1), capped, with jitter.
    send_backoff_base: float = Field(default=3.0, gt=0)
    send_backoff_max: float = Field(default=600.0, gt=0)
    #: The sender is woken right after a message is recorded; this poll is only the fallback.
    send_poll_interval: float = Field(default=1.0, gt=0)
    #: Messages claimed per pass; a claim holds a message this long (a crashed sender's claim expires).
    send_batch: int = Field(default=20, ge=1, le=500)
    send_lease_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> NotificationsSettings:
        if self.smtp_starttls and self.smtp_implicit_tls:
            raise ValueError("NOTIFICATIONS_SMTP_STARTTLS and NOTIFICATIONS_SMTP_IMPLICIT_TLS exclude each other")
        return self

    def resolved_sms_outbox_file(self) -> Path:
        return self.sms_outbox_file or self.data_dir / "sms.jsonl"

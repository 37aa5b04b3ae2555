"""Settings of the notifications service (env prefix NOTIFICATIONS_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
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
    #: Seconds for one SMTP conversation (connect, send, quit).
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = "microshop <shop@microshop.local>"
    #: Right-hand side of the Message-IDs this service makes.
    message_id_domain: str = "microshop.local"
    #: Where the links in emails point (the gateway in the local run).
    shop_url: str = "http://127.0.0.1:8000"
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

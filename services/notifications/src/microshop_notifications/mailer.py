"""Email over SMTP (aiosmtplib): builds the MIME message and maps SMTP replies to transient or permanent."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from microshop_notifications.domain import SendFailure, is_permanent_reply
from microshop_notifications.settings import NotificationsSettings
from microshop_notifications.store import Claimed

EVENT_HEADER = "X-Microshop-Event-Id"


def build_message(message: Claimed, mail_from: str) -> EmailMessage:
    """multipart/alternative: the text part first, the HTML part last (the one clients prefer)."""
    email = EmailMessage()
    email["From"] = mail_from
    email["To"] = message.recipient
    email["Subject"] = message.subject
    # Date and Message-ID come from the recorded message, so a resend is the very same email.
    email["Date"] = format_datetime(datetime.fromisoformat(message.created_at))
    email["Message-ID"] = message.message_id
    email[EVENT_HEADER] = message.event_id
    email.set_content(message.text)
    if message.html:
        email.add_alternative(message.html, subtype="html")
    return email


class SmtpMailer:
    """Hands one message to the configured SMTP server per call."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    async def send(self, message: Claimed) -> None:
        """Deliver or raise SendFailure saying whether trying again could help."""
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            email = build_message(message, settings.mail_from)
        except ValueError as exc:  # a header the email package refuses: no attempt can fix the message
            raise SendFailure(f"message cannot be built: {exc}", permanent=True) from exc
        try:
            await aiosmtplib.send(
                email,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                start_tls=settings.smtp_starttls,
                timeout=settings.smtp_timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise SendFailure(f"recipient refused: {detail}", permanent=all(map(is_permanent_reply, codes))) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the message, are at fault: retry (the operator may fix them in time).
            raise SendFailure(f"SMTP login refused: {exc.code} {exc.message}", permanent=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SendFailure(f"SMTP {exc.code} {exc.message}", permanent=is_permanent_reply(exc.code)) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # No answer at all (refused, reset, timed out, TLS trouble): the server may be back later.
            raise SendFailure(f"{type(exc).__name__}: {exc}", permanent=False) from exc

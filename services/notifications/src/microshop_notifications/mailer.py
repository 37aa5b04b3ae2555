"""Email over SMTP (aiosmtplib): builds the MIME message and maps SMTP replies to transient or permanent."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import secrets
import time
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr

import aiosmtplib

from microshop_notifications.domain import MARKETING, SendFailure, is_permanent_reply
from microshop_notifications.settings import NotificationsSettings
from microshop_notifications.store import Claimed

EVENT_HEADER = "X-Microshop-Event-Id"
#: RFC 5322's recommended longest line: longer header lines are folded.
_FOLD_AT = 78


def build_message(message: Claimed, settings: NotificationsSettings) -> bytes:
    """The email as it goes on the wire: multipart/alternative, the text part first and the HTML part last (the
    one clients prefer), each in UTF-8 quoted-printable (7-bit safe for any server, still readable as source).

    Written out here rather than by the email package: measured here, its compat32 classes took ~0.5 ms a
    message (header folding, boundary search, pure-Python quoted-printable), the largest part of sending a
    confirmation; this takes a tenth of it (``binascii.b2a_qp`` is C). What the package did for us is done here:
    a header value with a line break is refused (header injection), non-ASCII values are RFC 2047-encoded and
    long ones folded (by ``email.header``). The boundary starts with ``=_``, which quoted-printable text cannot
    contain (it writes ``=`` as ``=3D``), so it needs no search through the bodies.
    """
    headers = {
        "From": _sender(settings.mail_from)[0],
        "To": message.recipient,
        "Subject": message.subject,
        # Date and Message-ID come from the recorded message, so a resend is the very same email.
        "Date": format_datetime(datetime.fromisoformat(message.created_at)),
        "Message-ID": message.message_id,
        EVENT_HEADER: message.event_id,
        # RFC 3834: automatic mail, so out-of-office responders do not answer it.
        "Auto-Submitted": "auto-generated",
    }
    if message.kind == MARKETING:
        # RFC 2369 + RFC 8058 one-click: mailbox providers show an unsubscribe button for bulk mail.
        link = f"{settings.shop_url.rstrip('/')}/account/notifications/unsubscribe?m={message.id}"
        headers["List-Unsubscribe"] = f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe>, <{link}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    boundary = f"=_{secrets.token_hex(16)}"
    lines = [_header(key, value) for key, value in headers.items()]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"', ""]
    out = "\r\n".join(lines).encode("ascii")
    out += _part(boundary, "plain", message.text)
    if message.html:
        out += _part(boundary, "html", message.html)
    return out + f"\r\n--{boundary}--\r\n".encode("ascii")


@functools.cache
def _sender(mail_from: str) -> tuple[str, str]:
    """The From header and the envelope sender of the setting, parsed once (both parses cost ~17 us a message)."""
    name, address = parseaddr(mail_from)
    return formataddr((name, address), "utf-8"), address


def _header(key: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {key} has a line break: {value!r}")
    if not value.isascii():
        value = Header(value, "utf-8", header_name=key).encode(linesep="\r\n")
    elif len(key) + 2 + len(value) > _FOLD_AT:
        value = Header(value, header_name=key).encode(linesep="\r\n")
    return f"{key}: {value}"


def _part(boundary: str, subtype: str, text: str) -> bytes:
    body = binascii.b2a_qp(text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8"), istext=True)
    head = (
        f'\r\n--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + body.replace(b"\n", b"\r\n")


class SmtpMailer:
    """Hands messages to the configured SMTP server over a few kept-open connections.

    Reusing a connection saves the connect, EHLO, STARTTLS and login of every message (measured: the sender
    could not keep up with 100 emails/s when it opened one connection per message). A connection that
    failed in any way is closed, never reused; a kept one the server has meanwhile closed is replaced and
    the message sent again at once, since nothing was handed over on it.
    """

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)

    async def send(self, message: Claimed) -> None:
        """Deliver or raise SendFailure saying whether trying again could help."""
        try:
            email = build_message(message, self.settings)
        except ValueError as exc:  # a header we or the email package refuse: no attempt can fix the message
            raise SendFailure(f"message cannot be built: {exc}", permanent=True) from exc
        sender = _sender(self.settings.mail_from)[1]
        async with self._slots:
            client, reused = await self._connection()
            try:
                await _send_on(client, sender, message.recipient, email)
            except aiosmtplib.SMTPServerDisconnected as exc:
                if not reused:
                    raise _failure(exc) from exc
                # A kept connection the server dropped while idle: once more on a new one (same Message-ID).
                client, _ = await self._connection(fresh=True)
                try:
                    await _send_on(client, sender, message.recipient, email)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as again:
                    raise _failure(again) from again
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise _failure(exc) from exc
            self._idle.append((client, time.monotonic()))

    async def _connection(self, *, fresh: bool = False) -> tuple[aiosmtplib.SMTP, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.settings.smtp_idle_seconds:
                return client, True
            _close(client)
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            use_tls=settings.smtp_implicit_tls,
            validate_certs=settings.smtp_validate_certs,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.smtp_timeout,
        )
        try:
            await client.connect()
        except BaseException as exc:
            _close(client)
            if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                raise _failure(exc) from exc
            raise
        return client, False

    async def close(self) -> None:
        """Say QUIT on every kept connection (at shutdown)."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()
            _close(client)


async def _send_on(client: aiosmtplib.SMTP, sender: str, recipient: str, email: bytes) -> None:
    """One transaction (MAIL, RCPT, DATA) on a connection; a connection that failed is closed."""
    try:
        await client.sendmail(sender, [recipient], email)
    except BaseException:
        _close(client)
        raise


def _close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        client.close()


def _failure(exc: aiosmtplib.SMTPException | OSError | TimeoutError) -> SendFailure:
    """Whether trying again could help, from what the server answered (RFC 5321 reply classes)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return SendFailure(f"recipient refused: {detail}", permanent=all(map(is_permanent_reply, codes)))
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Our credentials, not the message, are at fault: retry (the operator may fix them in time).
        return SendFailure(f"SMTP login refused: {exc.code} {exc.message}", permanent=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendFailure(f"SMTP {exc.code} {exc.message}", permanent=is_permanent_reply(exc.code))
    # No answer at all (refused, reset, timed out, TLS trouble): the server may be back later.
    return SendFailure(f"{type(exc).__name__}: {exc}", permanent=False)

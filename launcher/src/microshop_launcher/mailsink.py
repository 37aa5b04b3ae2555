"""Local SMTP sink: accepts every email the shop sends, keeps it in a Maildir and shows it over HTTP.

    python -m microshop_launcher.mailsink --smtp-port 8025 --http-port 8026 --dir var/mail

HTTP: ``GET /messages`` (newest first; ``?to=addr`` filters by recipient), ``GET /messages/{id}``,
``DELETE /messages`` (clear), ``GET /livez``. For the local run and tests only: no TLS, any AUTH accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import mailbox
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

_MAILDIR_KEY = web.AppKey("maildir", mailbox.Maildir)


class _Handler:
    """aiosmtpd handler: every accepted message goes to the Maildir, with its envelope on top."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._tmp, self._new = f"{folder / 'tmp'}{os.sep}", f"{folder / 'new'}{os.sep}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # Like a real MTA: the envelope is kept, since Bcc'd recipients appear in no header.
        trace = f"Return-Path: <{envelope.mail_from}>\r\nX-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        self._deliver(trace.encode() + content)
        return "250 Message accepted for delivery"

    def _deliver(self, data: bytes) -> None:
        """Maildir delivery: written in tmp/, then renamed into new/ (readers never see half a message).

        Unlike ``mailbox.Maildir.add`` it does not fsync: this sink stands in for a relay on a developer's
        machine and in tests, where a message lost to a power cut costs nothing, and the fsync of every
        message was most of the sink's CPU time (measured under bench/checkout.py). Plain ``open`` and ``os.rename``
        on two prepared folder names: pathlib's object per path was a tenth of the sink's CPU per message.
        """
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.mailsink"
        temporary = self._tmp + name
        with open(temporary, "xb") as handle:  # buffered: writes all of it (os.write may stop short)
            handle.write(data)
        os.rename(temporary, self._new + name)


class _Smtp(SMTP):
    """aiosmtpd's SMTP session, with its address parsing remembered per argument.

    aiosmtpd 1.4.6 declares a ``typing.Protocol`` class inside ``_getaddr`` on every call (MAIL FROM and each
    RCPT TO): with the email package's address parser that was ~30% of the sink's CPU per message, profiled
    under bench/checkout.py. The answer depends on the argument alone (and the session's fixed local-part
    limit), so each distinct argument is parsed once, by aiosmtpd itself.
    """

    _parsed: ClassVar[dict[tuple[str, int], tuple[str | None, str | None]]] = {}

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        key = (arg, self.local_part_limit)
        found = self._parsed.get(key)
        if found is None:
            if len(self._parsed) >= 4096:  # a bound, should a client send endless distinct addresses
                self._parsed.clear()
            found = self._parsed[key] = super()._getaddr(arg)
        return found


def _accept_any(*_: Any) -> AuthResult:
    return AuthResult(success=True)


def _text(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    return None if part is None or part.get_content_subtype() != subtype else str(part.get_content())


def _summary(key: str, raw: mailbox.MaildirMessage) -> dict[str, Any]:
    message = email.message_from_bytes(raw.as_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    envelope = [addr for _, addr in getaddresses([str(message.get("X-Envelope-To", ""))]) if addr]
    return {
        "id": key,
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "recipients": envelope,
        "subject": str(message.get("Subject", "")),
        "date": str(message.get("Date", "")),
        "received_at": raw.get_date(),
        "text": _text(message, "plain"),
        "html": _text(message, "html"),
        "headers": {
            "message-id": message.get("Message-ID"),
            "x-microshop-event-id": message.get("X-Microshop-Event-Id"),
        },
    }


async def _list(request: web.Request) -> web.Response:
    maildir = request.app[_MAILDIR_KEY]
    items = [_summary(key, raw) for key, raw in maildir.iteritems()]
    wanted = request.query.get("to", "").strip().lower()
    if wanted:
        items = [item for item in items if wanted in (addr.lower() for addr in item["recipients"])]
    items.sort(key=lambda item: (item["received_at"], item["id"]), reverse=True)
    return web.json_response(items)


async def _one(request: web.Request) -> web.Response:
    key = request.match_info["id"]
    try:
        raw = request.app[_MAILDIR_KEY].get_message(key)
    except KeyError:
        return web.json_response({"title": "Not Found", "detail": f"No message {key!r}"}, status=404)
    return web.json_response(_summary(key, raw))


async def _clear(request: web.Request) -> web.Response:
    request.app[_MAILDIR_KEY].clear()
    return web.Response(status=204)


async def _livez(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@dataclass(frozen=True)
class Sink:
    """A running sink: the ports it really listens on (useful when 0 asked for any free port)."""

    smtp_port: int
    http_port: int
    maildir: mailbox.Maildir


@contextlib.asynccontextmanager
async def open_sink(
    smtp_port: int, http_port: int, folder: Path | str, *, host: str = "127.0.0.1"
) -> AsyncIterator[Sink]:
    """Serve SMTP and HTTP on the running event loop for the duration of the ``async with``."""
    maildir = mailbox.Maildir(Path(folder), create=True)
    for sub in ("tmp", "new", "cur"):  # Maildir creates them only for a folder that does not exist yet
        (Path(folder) / sub).mkdir(parents=True, exist_ok=True)
    handler = _Handler(Path(folder))
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: _Smtp(handler, hostname="mailsink.local", authenticator=_accept_any, auth_require_tls=False),
        host,
        smtp_port,
    )
    app = web.Application()
    app[_MAILDIR_KEY] = maildir
    app.router.add_get("/livez", _livez)
    app.router.add_get("/messages", _list)
    app.router.add_get("/messages/{id}", _one)
    app.router.add_delete("/messages", _clear)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, http_port)
        await site.start()
        yield Sink(smtp.sockets[0].getsockname()[1], runner.addresses[0][1], maildir)
    finally:
        smtp.close()
        await smtp.wait_closed()
        await runner.cleanup()


async def run_sink(smtp_port: int, http_port: int, folder: Path | str, *, host: str = "127.0.0.1") -> None:
    """Run the sink until cancelled."""
    async with open_sink(smtp_port, http_port, folder, host=host) as sink:
        print(f"mail sink: SMTP {host}:{sink.smtp_port}, HTTP http://{host}:{sink.http_port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="microshop_launcher.mailsink", description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--http-port", type=int, default=8026)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"), help="Maildir folder")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_sink(args.smtp_port, args.http_port, args.dir, host=args.host)

    asyncio.run(serve())


if __name__ == "__main__":
    main()

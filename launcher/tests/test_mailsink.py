"""The local mail sink: real SMTP in (aiosmtplib), real HTTP out, messages kept in a Maildir."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from microshop_kit.ports import free_port
from microshop_launcher.mailsink import Sink, open_sink, run_sink


def _email(to: str, subject: str, *, event_id: str = "evt-1") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "microshop <shop@microshop.local>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="microshop.local")
    message["X-Microshop-Event-Id"] = event_id
    message.set_content(f"Plain text for {subject} — 12,00 €")
    message.add_alternative(f"<p>HTML for <b>{subject}</b></p>", subtype="html")
    return message


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[Sink]:
    async with open_sink(0, 0, tmp_path / "mail") as running:
        yield running


async def _get(sink: Sink, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.http_port}") as client:
        return await client.get(path)


async def test_a_sent_email_is_listed_with_both_parts_and_headers(sink: Sink) -> None:
    message = _email("Alice <alice@example.com>", "Your order", event_id="evt-42")
    await aiosmtplib.send(message, hostname="127.0.0.1", port=sink.smtp_port)

    listed = (await _get(sink, "/messages")).json()

    assert len(listed) == 1
    item = listed[0]
    assert item["subject"] == "Your order"
    assert item["from"] == "microshop <shop@microshop.local>"
    assert item["to"] == "Alice <alice@example.com>"
    assert item["recipients"] == ["alice@example.com"]
    assert "12,00 €" in item["text"]
    assert "<b>Your order</b>" in item["html"]
    assert item["headers"] == {"message-id": message["Message-ID"], "x-microshop-event-id": "evt-42"}
    assert item["date"]
    one = await _get(sink, f"/messages/{item['id']}")
    assert one.status_code == 200
    assert one.json() == item


async def test_messages_are_newest_first_and_filter_by_recipient(sink: Sink) -> None:
    for n, to in enumerate(["a@example.com", "b@example.com", "a@example.com"]):
        await aiosmtplib.send(_email(to, f"mail {n}"), hostname="127.0.0.1", port=sink.smtp_port)

    subjects = [item["subject"] for item in (await _get(sink, "/messages")).json()]
    only_a = [item["subject"] for item in (await _get(sink, "/messages?to=A@example.com")).json()]

    assert subjects == ["mail 2", "mail 1", "mail 0"]
    assert only_a == ["mail 2", "mail 0"]


async def test_bcc_recipients_are_kept_from_the_envelope(sink: Sink) -> None:
    message = _email("a@example.com", "copy")
    await aiosmtplib.send(
        message, hostname="127.0.0.1", port=sink.smtp_port, recipients=["a@example.com", "hidden@example.com"]
    )

    [item] = (await _get(sink, "/messages?to=hidden@example.com")).json()

    assert item["recipients"] == ["a@example.com", "hidden@example.com"]


async def test_delete_clears_the_mailbox(sink: Sink) -> None:
    await aiosmtplib.send(_email("a@example.com", "gone"), hostname="127.0.0.1", port=sink.smtp_port)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.http_port}") as client:
        deleted = await client.delete("/messages")
        listed = await client.get("/messages")

    assert deleted.status_code == 204
    assert listed.json() == []


async def test_unknown_message_is_404(sink: Sink) -> None:
    assert (await _get(sink, "/messages/no-such-id")).status_code == 404
    assert (await _get(sink, "/messages/..%2F..%2Fetc")).status_code == 404


async def test_messages_survive_a_restart_in_the_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    async with open_sink(0, 0, folder) as first:
        await aiosmtplib.send(_email("a@example.com", "kept"), hostname="127.0.0.1", port=first.smtp_port)
    assert len(list((folder / "new").iterdir())) == 1

    async with open_sink(0, 0, folder) as second:
        listed = (await _get(second, "/messages")).json()

    assert [item["subject"] for item in listed] == ["kept"]


async def test_login_is_accepted_so_a_sender_with_credentials_works(sink: Sink) -> None:
    await aiosmtplib.send(
        _email("a@example.com", "authed"),
        hostname="127.0.0.1",
        port=sink.smtp_port,
        username="shop",
        password="anything",
        start_tls=False,
    )

    assert [item["subject"] for item in (await _get(sink, "/messages")).json()] == ["authed"]


async def test_run_sink_serves_until_cancelled(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    task = asyncio.create_task(run_sink(smtp_port, http_port, tmp_path / "mail"))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/livez")).status_code == 200:
                        break
                await asyncio.sleep(0.02)
            await aiosmtplib.send(_email("a@example.com", "hello"), hostname="127.0.0.1", port=smtp_port)
            listed = (await client.get("/messages")).json()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [item["subject"] for item in listed] == ["hello"]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", smtp_port), timeout=1):
        pass


def test_module_runs_as_a_command_and_stops_on_sigterm(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "microshop_launcher.mailsink",
        "--smtp-port",
        str(smtp_port),
        "--http-port",
        str(http_port),
        "--dir",
        str(tmp_path / "mail"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{http_port}/livez").status_code == 200:
                    break
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{http_port}/messages").json() == []
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "mail sink: SMTP" in output


async def test_a_folder_that_exists_but_is_empty_becomes_the_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    async with open_sink(0, 0, folder) as running:
        await aiosmtplib.send(
            _email("a@example.com", "into an empty folder"), hostname="127.0.0.1", port=running.smtp_port
        )
        listed = (await _get(running, "/messages")).json()

    assert [item["subject"] for item in listed] == ["into an empty folder"]
    assert len(list((folder / "new").iterdir())) == 1


async def test_a_malformed_address_is_refused_every_time_it_is_sent(sink: Sink) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port)
    await client.connect()
    try:
        answers = []
        for _ in range(2):  # the second answer comes from the remembered parse
            answers.append((await client.execute_command(b"MAIL", b"FROM:<two@@ats.example>")).code)
            await client.rset()
        sender = await client.execute_command(b"MAIL", b"FROM:<shop@microshop.local>")
        recipients = [(await client.execute_command(b"RCPT", f"TO:<{to}>".encode())).code for to in ("a@x.io", "<")]
    finally:
        client.close()

    assert answers == [553, 553]
    assert sender.code == 250
    assert recipients == [250, 553]

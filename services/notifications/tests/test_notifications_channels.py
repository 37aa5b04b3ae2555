"""SMS, the recipients read model, lookups at users, STARTTLS with auth, List-Unsubscribe, and dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email
import email.policy
import ipaddress
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from microshop_contracts import (
    Envelope,
    OrderShipped,
    PaymentRefunded,
    UserContactChanged,
    UserDeleted,
    UserRegistered,
)
from microshop_kit.testing import JwtIssuer, serve_aiohttp
from microshop_notifications.domain import MARKETING
from microshop_notifications.mailer import build_message
from microshop_notifications.sms import INVALID_NUMBER, SimulatedSmsProvider
from microshop_notifications.store import Claimed

if TYPE_CHECKING:
    from conftest import Service, SmtpInbox, Tools


def _shipped(user_id: str) -> Envelope:
    event = OrderShipped(
        order_id="5e1f0000-0000-4000-8000-000000000000", user_id=user_id, email=f"{user_id}@example.com",
        name="Sam", carrier="DHL", tracking_number="JD0146",
    )  # fmt: skip
    return Envelope.wrap(event, source="orders")


async def _known(service: Service, user_id: str, phone: str | None, opted_in: bool) -> None:
    """The user registers, then sets a phone and the SMS choice in their profile (users' events)."""
    await service.deliver(UserRegistered(user_id=user_id, email=f"{user_id}@example.com", name="Sam"))
    changed = UserContactChanged(
        user_id=user_id, email=f"{user_id}@example.com", name="Sam", phone=phone, sms_order_updates=opted_in
    )
    await service.deliver(changed)


async def _status(service: Service, event_id: str, channel: str) -> str | None:
    rows = [row for row in await service.messages(event_id) if row["channel"] == channel]
    return str(rows[0]["status"]) if rows else None


async def test_a_text_goes_to_a_user_with_a_phone_who_opted_in(tools: Tools, smtp_port: int, tmp_path: Path) -> None:
    outbox = tmp_path / "texts.jsonl"
    envelopes = {user: _shipped(user) for user in ("opted-in", "no-opt-in", "no-phone")}
    async with tools.running(tools.settings(smtp_port, sms_outbox_file=outbox)) as service:
        await _known(service, "opted-in", "+447700900123", True)
        await _known(service, "no-opt-in", "+447700900124", False)
        await _known(service, "no-phone", None, True)
        for envelope in envelopes.values():
            await service.deliver(envelope)
            await service.deliver(envelope)  # a redelivery makes no second text
        await tools.eventually(lambda: _sent_sms(service, envelopes["opted-in"].id), within=15)
        channels = {user: [row["channel"] for row in await service.messages(e.id)] for user, e in envelopes.items()}

    [text] = SimulatedSmsProvider(outbox).sent()
    assert text["to"] == "+447700900123"
    assert text["from"] == "microshop"
    assert text["text"] == "microshop: order 5E1F0000 shipped with DHL, tracking JD0146."
    assert channels == {"opted-in": ["email", "sms"], "no-opt-in": ["email"], "no-phone": ["email"]}


async def _sent_sms(service: Service, event_id: str) -> bool:
    return await _status(service, event_id, "sms") == "sent"


async def test_a_number_the_provider_refuses_is_dead_at_once(tools: Tools, smtp_port: int, tmp_path: Path) -> None:
    envelope = _shipped("invalid")
    async with tools.running(tools.settings(smtp_port, sms_outbox_file=tmp_path / "t.jsonl")) as service:
        await _known(service, "invalid", INVALID_NUMBER, True)
        await service.deliver(envelope)

        async def dead() -> bool:
            return await _status(service, envelope.id, "sms") == "dead"

        await tools.eventually(dead)
        [sms] = [row for row in await service.messages(envelope.id) if row["channel"] == "sms"]

    assert sms["attempts"] == 1
    assert "invalid 'To' phone number" in sms["last_error"]
    assert SimulatedSmsProvider(tmp_path / "t.jsonl").sent() == []


def _claimed(kind: str) -> Claimed:
    return Claimed(
        id="m-1", event_id="e-1", channel="email", recipient="ada@example.com", user_id="u", subject="Hi",
        text="Hi", html="<p>Hi</p>", message_id="<x@microshop.local>", created_at="2030-01-01T00:00:00+00:00",
        attempts=1, kind=kind, deferrals=0,
    )  # fmt: skip


def _parsed(built: bytes) -> EmailMessage:
    """The message as a mail client reads it; the parser found nothing wrong with it."""
    parsed = email.message_from_bytes(built, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.defects == [] and all(part.defects == [] for part in parsed.walk())
    return parsed


def test_bodies_come_out_of_the_encoding_as_they_went_in(tools: Tools) -> None:
    text = "Grüße, Zoë\n\n.a line starting with a dot\ntrailing space \nx=_y =3D " + "long " * 40 + "\r\nend\rof it\n"
    html = "<p>Café — " + "très " * 50 + "</p>\n"
    built = build_message(dataclasses.replace(_claimed("transactional"), text=text, html=html), tools.settings(25))
    parsed = _parsed(built)

    plain, rich = (parsed.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert plain is not None and rich is not None
    assert plain.get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n").replace("\r", "\n")
    assert rich.get_content().replace("\r\n", "\n") == html
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert built.isascii() and max(len(line) for line in built.split(b"\r\n")) <= 78
    assert b"\n" not in built.replace(b"\r\n", b"") and b"\r" not in built.replace(b"\r\n", b"")


@pytest.mark.parametrize("html", [None, ""])
def test_a_message_without_html_has_only_its_text_part(tools: Tools, html: str | None) -> None:
    parsed = _parsed(build_message(dataclasses.replace(_claimed("transactional"), html=html), tools.settings(25)))

    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain"]


def test_only_marketing_mail_carries_list_unsubscribe(tools: Tools) -> None:
    settings = tools.settings(25)
    marketing = _parsed(build_message(_claimed(MARKETING), settings))
    transactional = _parsed(build_message(_claimed("transactional"), settings))

    assert marketing["List-Unsubscribe"] == (
        "<mailto:unsubscribe@microshop.local?subject=unsubscribe>, "
        "<http://127.0.0.1:8000/account/notifications/unsubscribe?m=m-1>"
    )
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None
    assert transactional["Auto-Submitted"] == "auto-generated"


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_starttls_and_login_as_the_settings_ask(tools: Tools, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox, logins = tools.SmtpInbox(), []

    def authenticate(server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"s3cret")
        logins.append((mechanism, ok, session.ssl is not None))
        return AuthResult(success=ok)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            inbox,
            hostname="tls.test",
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=True,
        ),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    settings = tools.settings(port, smtp_starttls=True, smtp_ca_file=cert, smtp_username="shop", smtp_password="s3cret")
    envelope = _shipped("tls-user")
    try:
        async with tools.running(settings) as service:
            await service.deliver(envelope)
            await tools.eventually(lambda: _sent_email(service, envelope.id))
    finally:
        server.close()
        await server.wait_closed()

    assert [mail["X-Microshop-Event-Id"] for mail in inbox.messages] == [envelope.id]
    assert logins[-1][1:] == (True, True)  # logged in, over TLS


async def _sent_email(service: Service, event_id: str) -> bool:
    return await _status(service, event_id, "email") == "sent"


async def test_a_deleted_account_is_erased_and_its_unsent_mail_given_up(tools: Tools, smtp_port: int) -> None:
    async with tools.running(tools.settings(smtp_port)) as service:
        service.app.state.sender_task.cancel()  # nothing goes out while the account is deleted
        await asyncio.wait([service.app.state.sender_task], timeout=5)
        shipped = _shipped("gone")
        await service.deliver(
            Envelope.wrap(UserRegistered(user_id="gone", email="g@example.com", name="G"), source="users")
        )
        await service.deliver(shipped)
        await service.deliver(Envelope.wrap(UserDeleted(user_id="gone"), source="users"))
        late = Envelope.wrap(UserRegistered(user_id="gone", email="g@example.com", name="G"), source="users")
        await service.deliver(late)  # arrives after the deletion: no welcome, no resurrection
        [recipient] = await service.kit.database.fetch("SELECT * FROM recipients WHERE user_id = 'gone'")
        row = await service.message(shipped.id)
        late_rows = await service.messages(late.id)

    assert (recipient["email"], recipient["name"], recipient["deleted"]) == ("", "", 1)
    assert row["status"] == "dead" and row["recipient"] == "" and row["last_error"] == "The account was deleted"
    assert late_rows == []


@pytest.fixture
async def users() -> AsyncIterator[tuple[str, list[int]]]:
    """A stand-in for users' internal lookup over real HTTP: answers 503 while ``script`` says so."""
    script: list[int] = []

    async def lookup(request: web.Request) -> web.Response:
        status = script.pop(0) if script else 200
        user_id = request.match_info["user_id"]
        if status == 200 and user_id != "unknown":
            body = {"id": user_id, "email": f"{user_id}@example.com", "name": "Rae", "active": True, "can_order": True}
            return web.json_response(body)
        return web.json_response({"title": "x"}, status=404 if status == 200 else status)

    app = web.Application()
    app.router.add_get("/internal/v1/users/{user_id}", lookup)
    async with serve_aiohttp(app) as base:
        yield base, script


async def test_a_refund_is_addressed_by_a_lookup_that_waits_out_a_users_outage(
    tools: Tools, inbox: SmtpInbox, smtp_port: int, users: tuple[str, list[int]]
) -> None:
    base, script = users
    script.extend([503] * 3)  # one lookup (3 tries) fails: users is down for a moment
    refund = PaymentRefunded(payment_id="p", order_id="0f0f0000-1", amount=1999, currency="EUR", user_id="rae")
    envelope = Envelope.wrap(refund, source="payments")
    settings = tools.settings(smtp_port, users_url=base, send_max_attempts=1)
    async with tools.running(settings) as service:
        await service.deliver(envelope)
        await tools.eventually(lambda: _sent_email(service, envelope.id), within=15)
        row = await service.message(envelope.id)
        [known] = await service.kit.database.fetch("SELECT email FROM recipients WHERE user_id = 'rae'")

    assert row["deferrals"] == 1  # a wait for users does not use up the one attempt allowed
    assert row["attempts"] == 1
    assert row["recipient"] == known["email"] == "rae@example.com"
    [mail] = inbox.messages
    assert mail["To"] == "rae@example.com"
    assert mail["Subject"] == "Your refund of 19.99 EUR for order 0F0F0000"


async def test_a_refund_for_a_user_users_does_not_know_is_dead(
    tools: Tools, inbox: SmtpInbox, smtp_port: int, users: tuple[str, list[int]]
) -> None:
    refund = PaymentRefunded(payment_id="p", order_id="o", amount=100, currency="EUR", user_id="unknown")
    envelope = Envelope.wrap(refund, source="payments")
    async with tools.running(tools.settings(smtp_port, users_url=users[0])) as service:
        await service.deliver(envelope)

        async def dead() -> bool:
            return await service.status(envelope.id) == "dead"

        await tools.eventually(dead)
        row = await service.message(envelope.id)

    assert "knows no user 'unknown'" in row["last_error"]
    assert inbox.messages == []


async def test_admins_see_dead_events_and_the_retry_handles_them(
    tools: Tools, issuer: JwtIssuer, inbox: SmtpInbox, smtp_port: int
) -> None:
    welcome = Envelope.wrap(UserRegistered(user_id="u-late", email="late@example.com", name="Late"), source="users")
    async with tools.running(tools.settings(smtp_port)) as service:
        # As the bus records an event whose handler failed on every delivery.
        await service.kit.database.execute(
            "INSERT INTO bus_dead_letters (consumer, event_id, type, payload, error, deliveries, created_at) "
            "VALUES ('notifications', :id, :type, :payload, 'RuntimeError: boom', 5, '2030-01-01T00:00:00+00:00')",
            {"id": welcome.id, "type": welcome.type, "payload": welcome.model_dump_json()},
        )
        url = "/api/v1/notifications/dead-letters"
        listed = await service.client.get(url, headers=issuer.headers("admin", roles=["admin"]))
        forbidden = await service.client.get(url, headers=issuer.headers("u-late"))
        result = await service.app.state.dead_letters.retry()
        await tools.eventually(lambda: _sent_email(service, welcome.id))
        again = await service.app.state.dead_letters.retry()
        after = await service.client.get(url, headers=issuer.headers("admin", roles=["admin"]))

    assert listed.status_code == 200
    assert listed.json()["events"] == [
        {
            "event_id": welcome.id,
            "type": "user.registered.v1",
            "error": "RuntimeError: boom",
            "deliveries": 5,
            "created_at": "2030-01-01T00:00:00+00:00",
        }
    ]
    assert forbidden.status_code == 403
    assert (result.events, result.failed) == (1, [])
    assert (again.events, again.messages) == (0, 0)
    assert after.json() == {"messages": [], "events": []}
    assert [mail["To"] for mail in inbox.messages] == ["late@example.com"]


def test_non_ascii_headers_are_encoded_and_a_line_break_is_refused(tools: Tools) -> None:
    settings = tools.settings(25, mail_from="Café Shop <shop@microshop.local>")
    built = build_message(dataclasses.replace(_claimed("transactional"), subject="Reçu n°1 für Zoë"), settings)
    parsed = _parsed(built)

    assert parsed["Subject"] == "Reçu n°1 für Zoë"
    assert parsed["From"].addresses[0].display_name == "Café Shop"
    assert parsed["From"].addresses[0].addr_spec == "shop@microshop.local"
    assert built.isascii()
    with pytest.raises(ValueError, match="line break"):
        build_message(dataclasses.replace(_claimed("transactional"), recipient="a@x.org\r\nBcc: v@x.org"), settings)

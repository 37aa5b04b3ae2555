"""Wiring of the notifications service: event consumers, the message store and the sender loop (email, SMS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from microshop_kit.app import Kit, ServiceSpec, create_service_app
from microshop_kit.breaker import CircuitBreaker
from microshop_kit.http import ServiceClient
from microshop_notifications.api import router
from microshop_notifications.domain import EMAIL, SMS, RetryPolicy
from microshop_notifications.events import Consumers
from microshop_notifications.handlers import DeadLetters, Recorder, Sender
from microshop_notifications.mailer import SmtpMailer
from microshop_notifications.recipients import Directory
from microshop_notifications.render import Renderer
from microshop_notifications.settings import NotificationsSettings
from microshop_notifications.sms import SimulatedSmsProvider, SmsTransport
from microshop_notifications.store import MessageStore

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    app: FastAPI
    # Set by the consumers right after their transaction commits; the sender waits on it.
    wakeup = asyncio.Event()
    recorder = Recorder(message_id_domain=settings.message_id_domain, wake=wakeup.set)
    consumers = Consumers(Renderer(settings.shop_url), recorder)

    async def start(kit: Kit) -> None:
        store = MessageStore(kit.database)
        policy = RetryPolicy(settings.send_max_attempts, settings.send_backoff_base, settings.send_backoff_max)
        users = None
        if settings.users_url:
            users = ServiceClient(
                "users", settings.users_url, kit.http, timeout=settings.upstream_timeout, breaker=CircuitBreaker()
            )
        sms = SmsTransport(SimulatedSmsProvider(settings.resolved_sms_outbox_file()), settings.sms_from)
        mailer = SmtpMailer(settings)
        sender = Sender(
            store,
            {EMAIL: mailer, SMS: sms},
            policy,
            directory=Directory(kit.database, users),
            wakeup=wakeup,
            poll_interval=settings.send_poll_interval,
            batch=settings.send_batch,
            lease_seconds=settings.send_lease_seconds,
            concurrency=settings.smtp_connections,
        )
        app.state.mailer = mailer
        app.state.messages = store
        app.state.dead_letters = DeadLetters(store, consumers.handlers(), settings.service_name)
        app.state.sender = sender
        app.state.sender_task = kit.background(sender.run(), "email-sender")

    async def stop(kit: Kit) -> None:
        sender: Sender = app.state.sender
        sender.stop()
        # Let the message in flight finish; the kit cancels the loop after this if it is still running.
        await asyncio.wait([app.state.sender_task], timeout=settings.smtp_timeout + 1)
        await app.state.mailer.close()

    async def email_sender(kit: Kit) -> str:
        # SMTP being down does not make the service unready (messages wait in the table); a dead loop does.
        task: asyncio.Task[None] = app.state.sender_task
        if task.done():
            raise RuntimeError("the email sender loop has stopped")
        return "ok"

    app = create_service_app(
        settings,
        ServiceSpec(
            title="microshop notifications",
            routers=[router],
            migrations=MIGRATIONS,
            handlers=lambda kit: consumers.handlers(),
            startup=[start],
            shutdown=[stop],
            ready_checks=[email_sender],
        ),
    )
    return app

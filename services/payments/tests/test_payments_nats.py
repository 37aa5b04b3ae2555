"""Over the real NATS JetStream broker: each payment outcome leaves the outbox as one event with its event id
as the message id. Needs nats-server at 127.0.0.1:4222 (skipped when absent, failed under CI=true); the test
uses its own bus namespace and deletes its stream after."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from microshop_kit.bus.nats_broker import NatsBroker
from microshop_kit.testing import JwtIssuer, require_server, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.testing import DECLINED, THREE_D_SECURE, Shop

NATS_URL = "nats://127.0.0.1:4222"
pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]


async def _read(namespace: str, count: int) -> list[tuple[str | None, dict[str, Any]]]:
    """The first ``count`` messages of the namespace's stream: (Nats-Msg-Id, envelope)."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        while True:  # the service opens the broker (and creates its stream) in the background
            try:
                subscription = await js.subscribe(f"{namespace}.events.>", ordered_consumer=True)
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.05)
        messages = []
        for _ in range(count):
            msg = await subscription.next_msg(timeout=10)
            messages.append(((msg.headers or {}).get("Nats-Msg-Id"), json.loads(msg.data)))
        return messages
    finally:
        await client.close()


async def test_each_outcome_is_published_once_on_nats(tmp_path: Path, issuer: tuple[JwtIssuer, str]) -> None:
    require_server("127.0.0.1", 4222, "NATS (JetStream)")
    namespace = f"t{uuid.uuid4().hex[:12]}"
    settings = PaymentsSettings(data_dir=tmp_path, jwks_url=issuer[1], broker_url=NATS_URL, bus_namespace=namespace)
    app = create_app(settings)
    async with running_app(app) as client:
        shop = Shop(app, client, issuer[0], tmp_path)
        try:
            card, declined, secure = (
                await shop.add_card("u1"),
                await shop.add_card("u1", DECLINED),
                await shop.add_card("u1", THREE_D_SECURE),
            )
            captured = (await shop.charge("u1", card["id"], amount=1000)).json()
            await shop.charge("u1", declined["id"], amount=2000)
            waiting = (await shop.charge("u1", secure["id"], amount=3000)).json()
            await shop.act("u1", waiting["id"], "deny")
            await shop.refund(captured["order_id"], 400)

            messages = await asyncio.wait_for(_read(namespace, 4), 30)
            outbox = await shop.events()
        finally:
            broker = app.state.kit.bus.broker
            if isinstance(broker, NatsBroker) and broker.connected:
                await broker.delete_stream()

    assert [(envelope["type"], envelope["data"]["amount"]) for _, envelope in messages] == [
        ("payment.captured.v1", 1000),
        ("payment.failed.v1", 2000),
        ("payment.failed.v1", 3000),
        ("payment.refunded.v1", 400),
    ]
    assert [message_id for message_id, _ in messages] == [envelope["id"] for envelope in outbox]
    assert [envelope["data"].get("code") for _, envelope in messages[1:3]] == ["card_declined", "authentication_failed"]
    assert {envelope["source"] for _, envelope in messages} == {"payments"}

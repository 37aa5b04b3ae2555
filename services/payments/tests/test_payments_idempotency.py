"""Idempotency-Key of POST /internal/v1/payments: replay, reuse with another body, in flight, takeover."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from microshop_payments.handlers import ChargeCommand
from microshop_payments.provider import AuthResult, MethodRef, ProviderError
from microshop_payments.testing import DECLINED, Shop


async def test_same_key_and_body_replays_the_first_answer_without_a_second_charge(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())

    first = await shop.charge("u1", method["id"], order_id=order_id)
    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(await shop.rows("SELECT * FROM payments")) == 1
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_a_decline_is_replayed_identically(shop: Shop) -> None:
    method = await shop.add_card("u1", DECLINED)
    order_id = str(uuid.uuid4())

    first = await shop.charge("u1", method["id"], order_id=order_id)
    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert first.status_code == again.status_code == 402
    assert again.json() == first.json()
    assert again.headers["content-type"] == "application/problem+json"


async def test_same_key_with_a_different_body_is_422_without_side_effect(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    await shop.charge("u1", method["id"], order_id=order_id, amount=1000)

    reused = await shop.charge("u1", method["id"], order_id=order_id, amount=5000)

    assert reused.status_code == 422
    assert reused.json()["type"] == "/problems/idempotency-key-reused"
    [payment] = await shop.rows("SELECT amount FROM payments")
    assert payment["amount"] == 1000
    assert len(await shop.rows("SELECT * FROM ledger_entries")) == 2


async def test_same_key_while_the_first_is_in_flight_is_409_then_replays(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    held = shop.hold("authorize")
    first = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id))
    await held.entered.wait()

    duplicate = await asyncio.wait_for(shop.charge("u1", method["id"], order_id=order_id), 5)
    held.gate.set()
    answer = await first
    replay = await shop.charge("u1", method["id"], order_id=order_id)

    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == "/problems/idempotency-key-in-flight"
    assert duplicate.headers["Retry-After"] == "1"
    assert answer.status_code == 201 and replay.content == answer.content
    assert held.calls["authorize"] == 1


async def test_ten_concurrent_requests_with_one_key_charge_once(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    held = shop.hold("authorize")
    first = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id))
    await held.entered.wait()

    duplicates = await asyncio.wait_for(
        asyncio.gather(*(shop.charge("u1", method["id"], order_id=order_id) for _ in range(9))), 5
    )
    held.gate.set()
    answer = await first
    replays = await asyncio.gather(*(shop.charge("u1", method["id"], order_id=order_id) for _ in range(9)))

    assert {response.status_code for response in duplicates} == {409}
    assert answer.status_code == 201
    assert {response.content for response in replays} == {answer.content}
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_a_key_abandoned_in_flight_is_taken_over_after_its_lease(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    command = ChargeCommand(order_id, "u1", 1999, "EUR", method["id"])
    stale = (datetime.now(UTC) - timedelta(seconds=shop.service.settings.idempotency_lease_seconds + 5)).isoformat()
    await shop.service.db.execute(  # what a process killed mid-charge leaves behind
        "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
        "VALUES (:k, :h, 'in_flight', :at, :at)",
        {"k": order_id, "h": command.fingerprint(), "at": stale},
    )

    response = await shop.charge("u1", method["id"], order_id=order_id)

    assert response.status_code == 201
    [record] = await shop.rows("SELECT state, status_code FROM idempotency")
    assert record == {"state": "done", "status_code": 201}


async def test_a_recent_in_flight_key_is_not_taken_over(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    command = ChargeCommand(order_id, "u1", 1999, "EUR", method["id"])
    at = datetime.now(UTC).isoformat()
    await shop.service.db.execute(
        "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
        "VALUES (:k, :h, 'in_flight', :at, :at)",
        {"k": order_id, "h": command.fingerprint(), "at": at},
    )

    response = await shop.charge("u1", method["id"], order_id=order_id)

    assert response.status_code == 409


class _DownProvider:
    """A provider that does not answer authorizations (the rest delegates)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def authorize(self, amount: int, currency: str, method: MethodRef, *, idempotency_key: str) -> AuthResult:
        raise ProviderError("connection refused")


async def test_a_provider_outage_is_503_and_releases_the_key_for_a_retry(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    working = shop.service.provider
    shop.service.provider = _DownProvider(working)  # type: ignore[assignment]

    down = await shop.charge("u1", method["id"], order_id=order_id)
    shop.service.provider = working
    retried = await shop.charge("u1", method["id"], order_id=order_id)

    assert down.status_code == 503 and down.json()["type"] == "/problems/provider-unavailable"
    assert retried.status_code == 201


async def test_an_order_paid_under_another_key_with_other_parameters_is_409(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    await shop.charge("u1", method["id"], order_id=order_id, amount=1000)

    other = await shop.charge("u1", method["id"], order_id=order_id, amount=2000, key="another-key")
    same = await shop.charge("u1", method["id"], order_id=order_id, amount=1000, key="a-third-key")

    assert other.status_code == 409 and other.json()["type"] == "/problems/payment-exists"
    assert same.status_code == 201 and same.json()["amount"] == 1000
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_after_records_are_pruned_a_repeat_still_gets_the_same_answer(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = str(uuid.uuid4())
    first = await shop.charge("u1", method["id"], order_id=order_id)
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert await shop.service.store.prune_keys(future) == 1

    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert again.status_code == 201 and again.json() == first.json()
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1

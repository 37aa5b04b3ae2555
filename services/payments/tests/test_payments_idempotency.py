"""Idempotency-Key on every mutation: replay, reuse with another body, duplicates in flight, takeover, scopes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from microshop_payments.domain import request_hash
from microshop_payments.handlers import ChargeCommand
from microshop_payments.provider import AuthResult, MethodRef, ProviderError
from microshop_payments.testing import DECLINED, FUTURE_YEAR, THREE_D_SECURE, Shop, new_order_id

CHARGE_SCOPE = "POST /internal/v1/payments"


def _short_wait(shop: Shop, seconds: float = 0.1) -> None:
    """Make duplicates give up waiting for the first request quickly (the tests that want the 409)."""
    idempotency = shop.service.idempotency
    idempotency.settings = idempotency.settings.model_copy(update={"idempotency_wait_seconds": seconds})


def _stored_key(order_id: str) -> str:
    return f"{CHARGE_SCOPE}|{order_id}"


async def test_same_key_and_body_replays_the_first_answer_without_a_second_charge(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()

    first = await shop.charge("u1", method["id"], order_id=order_id)
    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(await shop.rows("SELECT * FROM payments")) == 1
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_a_decline_is_replayed_identically(shop: Shop) -> None:
    method = await shop.add_card("u1", DECLINED)
    order_id = new_order_id()

    first = await shop.charge("u1", method["id"], order_id=order_id)
    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert first.status_code == again.status_code == 402
    assert again.json() == first.json()
    assert again.headers["content-type"] == "application/problem+json"


async def test_same_key_with_a_different_body_is_422_without_side_effect(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    await shop.charge("u1", method["id"], order_id=order_id, amount=1000)

    reused = await shop.charge("u1", method["id"], order_id=order_id, amount=5000)

    assert reused.status_code == 422
    assert reused.json()["type"] == "/problems/idempotency-key-reused"
    [payment] = await shop.rows("SELECT amount FROM payments")
    assert payment["amount"] == 1000
    assert len(await shop.rows("SELECT * FROM ledger_entries")) == 2


async def test_same_key_while_the_first_is_in_flight_is_409_then_replays(shop: Shop) -> None:
    _short_wait(shop)
    method = await shop.add_card("u1")
    order_id = new_order_id()
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


async def test_ten_concurrent_identical_requests_charge_once_and_get_identical_replies(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()

    responses = await asyncio.gather(*(shop.charge("u1", method["id"], order_id=order_id) for _ in range(10)))

    assert {response.status_code for response in responses} == {201}
    assert len({response.content for response in responses}) == 1
    assert sum("Idempotent-Replayed" not in response.headers for response in responses) == 1
    assert len(await shop.rows("SELECT * FROM payments")) == 1
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1
    assert len(await shop.events("payment.captured.v1")) == 1


async def test_duplicates_wait_for_a_slow_first_request_and_replay_its_answer(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    held = shop.hold("authorize")
    first = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id))
    await held.entered.wait()
    duplicates = [asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id)) for _ in range(9)]
    await asyncio.sleep(0.2)  # the duplicates are waiting, well within their budget

    held.gate.set()
    answer, *replays = await asyncio.gather(first, *duplicates)

    assert answer.status_code == 201
    assert {(r.status_code, r.content) for r in replays} == {(201, answer.content)}
    assert held.calls["authorize"] == 1


async def test_ten_concurrent_requests_while_the_first_is_held_are_409_and_charge_once(shop: Shop) -> None:
    _short_wait(shop)
    method = await shop.add_card("u1")
    order_id = new_order_id()
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
    assert {response.json()["type"] for response in duplicates} == {"/problems/idempotency-key-in-flight"}
    assert answer.status_code == 201
    assert {response.content for response in replays} == {answer.content}
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_a_key_abandoned_in_flight_is_taken_over_after_its_lease(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    command = ChargeCommand(order_id, "u1", 1999, "EUR", method["id"])
    stale = (datetime.now(UTC) - timedelta(seconds=shop.service.settings.idempotency_lease_seconds + 5)).isoformat()
    await shop.service.db.execute(  # what a process killed mid-charge leaves behind
        "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
        "VALUES (:k, :h, 'in_flight', :at, :at)",
        {"k": _stored_key(order_id), "h": request_hash(CHARGE_SCOPE, command.fields()), "at": stale},
    )

    response = await shop.charge("u1", method["id"], order_id=order_id)

    assert response.status_code == 201
    [record] = await shop.rows("SELECT state, status_code FROM idempotency")
    assert record == {"state": "done", "status_code": 201}


async def test_a_recent_in_flight_key_is_not_taken_over(shop: Shop) -> None:
    _short_wait(shop)
    method = await shop.add_card("u1")
    order_id = new_order_id()
    command = ChargeCommand(order_id, "u1", 1999, "EUR", method["id"])
    at = datetime.now(UTC).isoformat()
    await shop.service.db.execute(  # held by another instance, say
        "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
        "VALUES (:k, :h, 'in_flight', :at, :at)",
        {"k": _stored_key(order_id), "h": request_hash(CHARGE_SCOPE, command.fields()), "at": at},
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
    order_id = new_order_id()
    working = shop.service.provider
    shop.service.provider = _DownProvider(working)  # type: ignore[assignment]

    down = await shop.charge("u1", method["id"], order_id=order_id)
    shop.service.provider = working
    retried = await shop.charge("u1", method["id"], order_id=order_id)

    assert down.status_code == 503 and down.json()["type"] == "/problems/provider-unavailable"
    assert retried.status_code == 201


async def test_an_order_paid_under_another_key_with_other_parameters_is_409(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    await shop.charge("u1", method["id"], order_id=order_id, amount=1000)

    other = await shop.charge("u1", method["id"], order_id=order_id, amount=2000, key="another-key")
    same = await shop.charge("u1", method["id"], order_id=order_id, amount=1000, key="a-third-key")

    assert other.status_code == 409 and other.json()["type"] == "/problems/payment-exists"
    assert same.status_code == 201 and same.json()["amount"] == 1000
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


async def test_after_records_are_pruned_a_repeat_still_gets_the_same_answer(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    first = await shop.charge("u1", method["id"], order_id=order_id)
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert await shop.service.store.prune_keys(future) == 1

    again = await shop.charge("u1", method["id"], order_id=order_id)

    assert again.status_code == 201 and again.json() == first.json()
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1


# ---------------------------------------------------------------------------------- the other mutations


async def test_a_refund_key_replays_refuses_another_amount_and_may_be_the_order_id(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = (await shop.charge("u1", method["id"], amount=1000)).json()["order_id"]

    first = await shop.refund(order_id, 300, key=order_id)  # the charge's key too: keys are scoped per route
    again = await shop.refund(order_id, 300, key=order_id)
    other = await shop.refund(order_id, 400, key=order_id)
    second = await shop.refund(order_id, 300, key="second")

    assert first.status_code == again.status_code == 201 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["type"] == "/problems/idempotency-key-reused"
    assert second.status_code == 201 and second.json()["amount_refunded"] == 600
    assert len(await shop.events("payment.refunded.v1")) == 2


async def test_an_error_answer_is_replayed_too(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = (await shop.charge("u1", method["id"], amount=1000)).json()["order_id"]

    too_much = await shop.refund(order_id, 5000, key="k1")
    again = await shop.refund(order_id, 5000, key="k1")

    assert too_much.status_code == again.status_code == 422 and again.content == too_much.content
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_an_action_key_refuses_the_other_decision(shop: Shop) -> None:
    method = await shop.add_card("u1", THREE_D_SECURE)
    payment = (await shop.charge("u1", method["id"])).json()
    url = f"/api/v1/payments/{payment['id']}/action"
    headers = {"Idempotency-Key": "act-1", **shop.issuer.headers("u1")}

    approve = await shop.client.post(url, json={"decision": "approve"}, headers=headers)
    replay = await shop.client.post(url, json={"decision": "approve"}, headers=headers)
    deny = await shop.client.post(url, json={"decision": "deny"}, headers=headers)

    assert approve.status_code == 200 and approve.json()["status"] == "succeeded"
    assert replay.content == approve.content and replay.headers["Idempotent-Replayed"] == "true"
    assert deny.status_code == 422 and deny.json()["type"] == "/problems/idempotency-key-reused"


async def test_public_keys_are_scoped_per_user(shop: Shop) -> None:
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": FUTURE_YEAR, "cvc": "739"}
    body = {"type": "card", "card": card}

    alice = await shop.client.post(
        "/api/v1/payment-methods", json=body, headers={"Idempotency-Key": "same", **shop.issuer.headers("alice")}
    )
    bob = await shop.client.post(
        "/api/v1/payment-methods", json=body, headers={"Idempotency-Key": "same", **shop.issuer.headers("bob")}
    )
    alice_again = await shop.client.post(
        "/api/v1/payment-methods", json=body, headers={"Idempotency-Key": "same", **shop.issuer.headers("alice")}
    )

    assert alice.status_code == bob.status_code == alice_again.status_code == 201
    assert alice.json()["id"] != bob.json()["id"]
    assert alice_again.json() == alice.json()
    owners = await shop.rows("SELECT user_id FROM payment_methods ORDER BY user_id")
    assert owners == [{"user_id": "alice"}, {"user_id": "bob"}]
    [stored] = await shop.rows("SELECT request_hash, response_body FROM idempotency WHERE key LIKE '%alice%'")
    assert "4242424242424242" not in stored["response_body"]


async def test_a_cancel_with_a_key_replays(shop: Shop) -> None:
    order_id = new_order_id()
    url = f"/internal/v1/payments/{order_id}/cancel"

    first = await shop.client.post(url, headers={"Idempotency-Key": "c1"})
    again = await shop.client.post(url, headers={"Idempotency-Key": "c1"})

    assert first.json() == again.json() == {"order_id": order_id, "status": "canceled"}
    assert again.headers["Idempotent-Replayed"] == "true"

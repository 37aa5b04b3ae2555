"""Refunds: partial and full, never more than captured, races, a refund whose request died, cancel after."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from microshop_payments.testing import THREE_D_SECURE, Shop, new_order_id

PROBLEM = "application/problem+json"


async def _captured(shop: Shop, amount: int = 1000) -> str:
    method = await shop.add_card("u1")
    response = await shop.charge("u1", method["id"], amount=amount)
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def test_partial_refunds_then_the_rest_by_default(shop: Shop) -> None:
    order_id = await _captured(shop, 1000)

    first = await shop.refund(order_id, 250)
    second = await shop.refund(order_id, 150)
    rest = await shop.refund(order_id)

    assert [r.status_code for r in (first, second, rest)] == [201, 201, 201]
    assert [(r.json()["amount"], r.json()["amount_refunded"]) for r in (first, second, rest)] == [
        (250, 250),
        (150, 400),
        (600, 1000),
    ]
    assert first.json()["status"] == "succeeded" and first.json()["currency"] == "EUR"
    payment = (await shop.payment(order_id)).json()
    assert payment["status"] == "succeeded" and payment["amount_refunded"] == 1000
    refunds = await shop.rows("SELECT amount FROM ledger_entries WHERE kind = 'refund' ORDER BY created_at")
    assert [r["amount"] for r in refunds] == [-250, -150, -600]
    events = await shop.events("payment.refunded.v1")
    assert [e["data"]["amount"] for e in events] == [250, 150, 600]
    assert {e["data"]["user_id"] for e in events} == {"u1"}
    assert await shop.service.store.reconcile() == []


async def test_a_refund_beyond_what_is_left_is_422_naming_amount_and_changes_nothing(shop: Shop) -> None:
    order_id = await _captured(shop, 1000)
    await shop.refund(order_id, 700)

    response = await shop.refund(order_id, 301)

    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/refund-exceeds-captured" and problem["refundable"] == 300
    assert problem["errors"][0]["loc"] == ["body", "amount"]
    assert (await shop.payment(order_id)).json()["amount_refunded"] == 700
    assert len(await shop.events("payment.refunded.v1")) == 1


async def test_nothing_left_to_refund_is_409(shop: Shop) -> None:
    order_id = await _captured(shop, 1000)
    await shop.refund(order_id)

    again = await shop.refund(order_id)
    one_more = await shop.refund(order_id, 1)

    for response in (again, one_more):
        assert response.status_code == 409 and response.json()["type"] == "/problems/not-refundable"
    assert (await shop.payment(order_id)).json()["amount_refunded"] == 1000


async def test_a_payment_not_captured_cannot_be_refunded(shop: Shop) -> None:
    method = await shop.add_card("u1", THREE_D_SECURE)
    waiting = (await shop.charge("u1", method["id"])).json()
    tombstone = new_order_id()
    await shop.cancel(tombstone)

    for order_id in (waiting["order_id"], tombstone):
        response = await shop.refund(order_id, 100)
        assert response.status_code == 409 and response.json()["type"] == "/problems/not-refundable"
    unknown = await shop.refund(new_order_id(), 100)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    assert await shop.rows("SELECT * FROM refunds") == []


async def test_concurrent_refunds_never_exceed_what_was_captured(shop: Shop) -> None:
    order_id = await _captured(shop, 1000)

    responses = await asyncio.gather(*(shop.refund(order_id, 300, key=f"k{i}") for i in range(6)))

    assert sorted(r.status_code for r in responses) == [201, 201, 201, 422, 422, 422]
    assert (await shop.payment(order_id)).json()["amount_refunded"] == 900
    assert len(await shop.events("payment.refunded.v1")) == 3
    assert await shop.service.store.reconcile() == []


@pytest.mark.parametrize(
    ("in_flight", "then", "status", "problem"),
    [(700, 400, 422, "/problems/refund-exceeds-captured"), (1000, None, 409, "/problems/not-refundable")],
)
async def test_a_refund_in_flight_counts_against_what_is_left(
    shop: Shop, in_flight: int, then: int | None, status: int, problem: str
) -> None:
    order_id = await _captured(shop, 1000)
    held = shop.hold("refund")
    first = asyncio.create_task(shop.refund(order_id, in_flight, key="first"))
    await held.entered.wait()  # reserved, the provider not answered yet

    second = await asyncio.wait_for(shop.refund(order_id, then, key="second"), 5)
    held.gate.set()

    assert second.status_code == status and second.json()["type"] == problem
    assert (await first).status_code == 201
    assert (await shop.payment(order_id)).json()["amount_refunded"] == in_flight


async def test_cancel_after_a_partial_refund_refunds_the_rest(shop: Shop) -> None:
    order_id = await _captured(shop, 1000)
    await shop.refund(order_id, 400)

    canceled = await shop.cancel(order_id)
    again = await shop.cancel(order_id)

    assert canceled.json() == again.json() == {"order_id": order_id, "status": "refunded"}
    assert [e["data"]["amount"] for e in await shop.events("payment.refunded.v1")] == [400, 600]
    assert (await shop.payment(order_id)).json()["amount_refunded"] == 1000
    assert await shop.service.store.reconcile() == []


async def test_a_refund_whose_request_died_is_finished_by_its_retry_or_by_a_cancel(shop: Shop) -> None:
    first, second = await _captured(shop, 1000), await _captured(shop, 800)
    held = shop.hold("refund")
    dying = [asyncio.create_task(shop.refund(order_id, 300, key="k")) for order_id in (first, second)]
    await asyncio.wait_for(held.until("refund", 2), 5)
    for task in dying:  # the requests die after reserving their refunds, before the provider answered
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    held.gate.set()
    assert len(await shop.rows("SELECT * FROM refunds WHERE status = 'pending'")) == 2
    assert await shop.service.store.reconcile() == []  # pending refunds are not yet money moved

    retried = await shop.refund(first, 300, key="k")
    canceled = await shop.cancel(second)

    assert retried.status_code == 201 and retried.json()["amount_refunded"] == 300
    assert canceled.json()["status"] == "refunded"
    assert (await shop.payment(second)).json()["amount_refunded"] == 800
    assert sorted(e["data"]["amount"] for e in await shop.events("payment.refunded.v1")) == [300, 300, 500]
    assert await shop.rows("SELECT * FROM refunds WHERE status = 'pending'") == []
    assert await shop.service.store.reconcile() == []


@pytest.mark.parametrize(
    "body",
    [{"amount": 0}, {"amount": -5}, {"amount": "100"}, {"amount": 1.5}, {"amount": True}, {"surprise": 1}, []],
)
async def test_bad_refund_bodies_are_422_problems(shop: Shop, body: object) -> None:
    order_id = await _captured(shop)

    response = await shop.client.post(
        f"/internal/v1/payments/{order_id}/refund", json=body, headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"][0] == "body"
    assert await shop.rows("SELECT * FROM refunds") == []


async def test_a_refund_needs_an_idempotency_key(shop: Shop) -> None:
    order_id = await _captured(shop)

    response = await shop.client.post(f"/internal/v1/payments/{order_id}/refund", json={"amount": 100})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_a_refund_without_a_body_refunds_everything(shop: Shop) -> None:
    order_id = await _captured(shop, 500)

    response = await shop.client.post(f"/internal/v1/payments/{order_id}/refund", headers={"Idempotency-Key": "k"})

    assert response.status_code == 201 and response.json()["amount"] == 500

"""Payment intents: the customer's 3-D Secure / PayPal step, ownership, state reads, illegal moves, expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from microshop_kit.testing import JwtIssuer, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.testing import DECLINED, THREE_D_SECURE, VISA, Shop, new_order_id

PROBLEM = "application/problem+json"


async def _waiting(shop: Shop, user_id: str = "u1", *, paypal: bool = False, amount: int = 1500) -> dict[str, Any]:
    """A payment waiting for the customer's approval (a 3-D Secure card, or PayPal)."""
    method = await shop.add_paypal(user_id) if paypal else await shop.add_card(user_id, THREE_D_SECURE)
    response = await shop.charge(user_id, method["id"], amount=amount)
    assert response.status_code == 201 and response.json()["status"] == "requires_action", response.text
    payment: dict[str, Any] = response.json()
    return payment


@pytest.mark.parametrize("paypal", [False, True], ids=["3ds", "paypal"])
async def test_approving_authorizes_and_captures_and_publishes_captured(shop: Shop, paypal: bool) -> None:
    payment = await _waiting(shop, paypal=paypal)

    response = await shop.act("u1", payment["id"], "approve")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded" and body["next_action"] is None and body["code"] is None
    assert body["method"]["type"] == ("paypal" if paypal else "card")
    assert (await shop.payment(payment["order_id"])).json()["status"] == "succeeded"
    entries = await shop.rows("SELECT kind, amount FROM ledger_entries ORDER BY kind")
    assert [(e["kind"], e["amount"]) for e in entries] == [("authorization", 1500), ("capture", 1500)]
    [event] = await shop.events("payment.captured.v1")
    assert event["data"]["payment_id"] == payment["id"] and event["data"]["method"] == body["method"]["type"]
    assert await shop.events("payment.failed.v1") == []
    assert await shop.service.store.reconcile() == []


@pytest.mark.parametrize("paypal", [False, True], ids=["3ds", "paypal"])
async def test_denying_cancels_with_authentication_failed_and_publishes_failed(shop: Shop, paypal: bool) -> None:
    payment = await _waiting(shop, paypal=paypal)

    response = await shop.act("u1", payment["id"], "deny")

    assert response.status_code == 200
    assert response.json()["status"] == "canceled" and response.json()["code"] == "authentication_failed"
    [event] = await shop.events("payment.failed.v1")
    assert event["data"]["code"] == "authentication_failed" and event["data"]["order_id"] == payment["order_id"]
    assert await shop.events("payment.captured.v1") == []
    assert await shop.rows("SELECT * FROM ledger_entries") == []


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_acting_twice_gives_the_same_result_and_moves_nothing_more(shop: Shop, decision: str) -> None:
    payment = await _waiting(shop)

    first = await shop.act("u1", payment["id"], decision)
    again = await asyncio.gather(*(shop.act("u1", payment["id"], decision) for _ in range(3)))

    assert {(r.status_code, r.content) for r in again} == {(200, first.content)}
    assert len(await shop.events()) == 1
    assert len(await shop.rows("SELECT * FROM ledger_entries")) == (2 if decision == "approve" else 0)


async def test_concurrent_approvals_capture_once(shop: Shop) -> None:
    payment = await _waiting(shop)

    responses = await asyncio.gather(*(shop.act("u1", payment["id"], "approve") for _ in range(5)))

    assert {r.json()["status"] for r in responses} == {"succeeded"}
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'capture'")) == 1
    assert len(await shop.events("payment.captured.v1")) == 1


@pytest.mark.parametrize(("first", "then"), [("approve", "deny"), ("deny", "approve")])
async def test_the_other_decision_after_one_is_a_409_illegal_transition(shop: Shop, first: str, then: str) -> None:
    payment = await _waiting(shop)
    await shop.act("u1", payment["id"], first)

    response = await shop.act("u1", payment["id"], then)

    assert response.status_code == 409 and response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "/problems/illegal-transition"
    assert len(await shop.events()) == 1


async def test_acting_on_a_payment_the_order_canceled_is_409(shop: Shop) -> None:
    payment = await _waiting(shop)
    canceled = await shop.cancel(payment["order_id"])

    approve = await shop.act("u1", payment["id"], "approve")
    deny = await shop.act("u1", payment["id"], "deny")

    assert canceled.json() == {"order_id": payment["order_id"], "status": "voided"}
    for response in (approve, deny):
        assert response.status_code == 409 and response.json()["type"] == "/problems/illegal-transition"
        assert response.json()["payment_status"] == "canceled"
    assert (await shop.payment(payment["order_id"])).json()["status"] == "canceled"
    assert await shop.events() == []  # orders canceled it: no failure to report
    assert await shop.rows("SELECT * FROM ledger_entries") == []


async def test_acting_on_a_payment_that_never_waited_is_409(shop: Shop) -> None:
    card, declined = await shop.add_card("u1", VISA), await shop.add_card("u1", DECLINED)
    succeeded = (await shop.charge("u1", card["id"])).json()
    failed = (await shop.charge("u1", declined["id"])).json()

    for payment_id in (succeeded["id"], failed["payment_id"]):
        for decision in ("approve", "deny"):
            response = await shop.act("u1", payment_id, decision)
            assert response.status_code == 409 and response.json()["type"] == "/problems/illegal-transition"


async def test_another_users_payment_is_404_to_read_and_to_act_on(shop: Shop) -> None:
    payment = await _waiting(shop, "alice")

    for response in (
        await shop.view("mallory", payment["id"]),
        await shop.act("mallory", payment["id"], "approve"),
        await shop.view("mallory", "pay_does_not_exist"),
    ):
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert (await shop.view("alice", payment["id"])).json()["status"] == "requires_action"
    assert await shop.events() == []


async def test_reading_and_acting_need_a_token(shop: Shop) -> None:
    payment = await _waiting(shop)

    read = await shop.client.get(f"/api/v1/payments/{payment['id']}")
    act = await shop.client.post(f"/api/v1/payments/{payment['id']}/action", json={"decision": "approve"})

    assert read.status_code == act.status_code == 401


async def test_the_owner_sees_status_amount_method_and_next_action(shop: Shop) -> None:
    payment = await _waiting(shop, amount=2300)

    response = await shop.view("u1", payment["id"])

    assert response.status_code == 200
    assert response.json() == {
        "id": payment["id"],
        "order_id": payment["order_id"],
        "status": "requires_action",
        "amount": 2300,
        "amount_refunded": 0,
        "currency": "EUR",
        "method": {"type": "card", "brand": "visa", "last4": "3184"},
        "code": None,
        "next_action": {"type": "redirect_to_url", "url": f"/pay/{payment['id']}"},
    }


async def test_orders_reads_the_payment_of_an_order(shop: Shop) -> None:
    payment = await _waiting(shop)
    tombstone = new_order_id()
    await shop.cancel(tombstone)

    waiting = await shop.payment(payment["order_id"])
    await shop.act("u1", payment["id"], "approve")
    done = await shop.payment(payment["order_id"])
    none = await shop.payment(new_order_id())
    canceled = await shop.payment(tombstone)

    assert waiting.json()["status"] == "requires_action" and waiting.json()["user_id"] == "u1"
    assert waiting.json()["next_action"]["url"] == f"/pay/{payment['id']}"
    assert done.json()["status"] == "succeeded" and done.json()["next_action"] is None
    assert none.status_code == 404 and none.headers["content-type"] == PROBLEM
    assert canceled.json()["status"] == "canceled" and canceled.json()["amount"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"decision": "maybe"}, {"decision": "approve", "extra": 1}, {"decision": None}],
)
async def test_bad_action_bodies_are_422_naming_the_field(shop: Shop, body: dict[str, object]) -> None:
    payment = await _waiting(shop)

    response = await shop.client.post(
        f"/api/v1/payments/{payment['id']}/action", json=body, headers=shop.issuer.headers("u1")
    )

    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"][1] in ("decision", "extra")


# --------------------------------------------------------------------------------------------- races


async def test_cancel_while_the_approval_reaches_the_provider_leaves_no_money_taken(shop: Shop) -> None:
    payment = await _waiting(shop)
    held = shop.hold("confirm")
    approve = asyncio.create_task(shop.act("u1", payment["id"], "approve"))
    await held.entered.wait()

    canceled = await shop.cancel(payment["order_id"])
    held.gate.set()
    answer = await approve

    assert canceled.json()["status"] == "voided"
    assert answer.status_code == 409  # the payment was canceled before the approval arrived
    assert (await shop.payment(payment["order_id"])).json()["status"] == "canceled"
    assert await shop.events("payment.captured.v1") == []
    assert await shop.service.store.reconcile() == []


async def test_cancel_after_the_provider_approved_but_before_it_was_recorded_voids_the_hold(shop: Shop) -> None:
    payment = await _waiting(shop)
    held = shop.hold("before_capture")
    approve = asyncio.create_task(shop.act("u1", payment["id"], "approve"))
    await held.entered.wait()  # authorized and recorded; the capture waits

    canceled = await shop.cancel(payment["order_id"])
    held.gate.set()
    answer = await approve

    assert canceled.json()["status"] == "voided"
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"  # approved, then the order canceled
    entries = await shop.rows("SELECT kind, amount FROM ledger_entries ORDER BY kind")
    assert [(e["kind"], e["amount"]) for e in entries] == [("authorization", 1500), ("void", -1500)]
    assert await shop.events("payment.captured.v1") == []
    assert await shop.service.store.reconcile() == []


# -------------------------------------------------------------------------------------------- expiry


async def test_a_payment_waiting_past_its_ttl_expires_with_payment_failed(shop: Shop) -> None:
    old, fresh = await _waiting(shop), await _waiting(shop)
    await shop.service.db.execute(
        "UPDATE payments SET updated_at = '2000-01-01T00:00:00+00:00' WHERE id = :id", {"id": old["id"]}
    )

    expired = await shop.service.expire_actions()
    approve = await shop.act("u1", old["id"], "approve")

    assert expired == 1
    assert (await shop.payment(old["order_id"])).json()["code"] == "action_expired"
    assert (await shop.payment(fresh["order_id"])).json()["status"] == "requires_action"
    assert approve.status_code == 409 and approve.json()["type"] == "/problems/illegal-transition"
    [event] = await shop.events("payment.failed.v1")
    assert event["data"]["code"] == "action_expired" and event["data"]["payment_id"] == old["id"]
    assert (await shop.cancel(old["order_id"])).json()["status"] == "canceled"


async def test_the_service_expires_abandoned_steps_on_its_own(
    settings: PaymentsSettings, issuer: tuple[JwtIssuer, str], tmp_path: Path
) -> None:
    quick = settings.model_copy(update={"action_ttl_seconds": 0.2, "expiry_interval_seconds": 0.05})
    app = create_app(quick)
    async with running_app(app) as client:
        shop = Shop(app, client, issuer[0], tmp_path)
        payment = await _waiting(shop)

        for _ in range(100):  # the loop runs every 0.05 s: 5 s at most
            seen = (await shop.payment(payment["order_id"])).json()
            if seen["status"] != "requires_action":
                break
            await asyncio.sleep(0.05)

        assert seen["status"] == "canceled" and seen["code"] == "action_expired"
        assert [e["type"] for e in await shop.events()] == ["payment.failed.v1"]

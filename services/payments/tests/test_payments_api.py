"""Payment methods, charges per Stripe test card, cancel (refund, void, tombstone), the reconciling ledger."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from microshop_kit.errors import IntegrityError
from microshop_kit.testing import LeanCheck, compare_each_with_fastapi
from microshop_payments.testing import (
    AMEX,
    DECLINED,
    EXPIRED,
    FUTURE_YEAR,
    INCORRECT_CVC,
    INSUFFICIENT,
    MASTERCARD,
    PROCESSING_ERROR,
    THREE_D_SECURE,
    VISA,
    Shop,
    new_order_id,
)

PROBLEM = "application/problem+json"


def _card(number: str, changes: dict[str, object] | None = None, **more: object) -> dict[str, object]:
    card: dict[str, object] = {"number": number, "exp_month": 12, "exp_year": FUTURE_YEAR, "cvc": "739"}
    card.update(changes or {}, **more)
    return {"type": "card", "card": card}


# ------------------------------------------------------------------------------------------ payment methods


@pytest.mark.parametrize(
    ("number", "brand", "provider_ref"),
    [
        (VISA, "visa", "succeeds"),
        ("4242 4242 4242 4242", "visa", "succeeds"),
        (MASTERCARD, "mastercard", "succeeds"),
        (DECLINED, "visa", "declined:card_declined"),
        (INSUFFICIENT, "visa", "declined:insufficient_funds"),
        (EXPIRED, "visa", "declined:expired_card"),
        (INCORRECT_CVC, "visa", "declined:incorrect_cvc"),
        (PROCESSING_ERROR, "visa", "processing_error"),
        (THREE_D_SECURE, "visa", "requires_action"),
        (AMEX, "amex", "succeeds"),
        ("6011111111111117", "other", "succeeds"),
    ],
)
async def test_tokenizes_each_test_card_keeping_only_brand_last4_and_expiry(
    shop: Shop, number: str, brand: str, provider_ref: str
) -> None:
    body = _card(number, cvc="7391" if brand == "amex" else "739")
    response = await shop.client.post("/api/v1/payment-methods", json=body, headers=shop.issuer.headers("u1"))

    assert response.status_code == 201, response.text
    method = response.json()
    assert method["id"].startswith("pm_")
    assert method == {
        "id": method["id"],
        "type": "card",
        "brand": brand,
        "last4": number[-4:],
        "exp_month": 12,
        "exp_year": FUTURE_YEAR,
    }
    [row] = await shop.rows("SELECT * FROM payment_methods WHERE id = :id", {"id": method["id"]})
    assert row["user_id"] == "u1" and row["provider_ref"] == provider_ref
    assert set(row) == {
        "id",
        "user_id",
        "type",
        "brand",
        "last4",
        "exp_month",
        "exp_year",
        "email",
        "provider_ref",
        "created_at",
    }


async def test_saves_a_paypal_account(shop: Shop) -> None:
    method = await shop.add_paypal("u1", "buyer@example.com")

    assert method == {"id": method["id"], "type": "paypal", "email": "buyer@example.com"}


@pytest.mark.parametrize("number", ["4242424242424241", "4242 4242 4242 4243", "1234567812345678"])
async def test_luhn_failure_is_422_naming_card_number_without_echoing_it(shop: Shop, number: str) -> None:
    response = await shop.client.post("/api/v1/payment-methods", json=_card(number), headers=shop.issuer.headers("u1"))

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", "card", "number"]
    for form in (number, number.replace(" ", ""), number[-8:]):
        assert form not in response.text
    assert "739" not in response.text


@pytest.mark.parametrize(
    ("card", "field"),
    [
        ({"exp_year": date.today().year - 1}, "exp_year"),
        ({"exp_year": date.today().year + 40}, "exp_year"),
        ({"exp_month": 13}, "exp_month"),
        ({"number": "4242-4242-4242-4242"}, "number"),
        ({"number": "4242424242"}, "number"),
        ({"number": "4242 4242 4242 4242 4242 4242 4242 4242 4242"}, "number"),
        ({"number": 4242424242424242}, "number"),
        ({"cvc": "12"}, "cvc"),
        ({"cvc": "12a"}, "cvc"),
        ({"cvc": "123456789"}, "cvc"),
        ({"pin": "1234"}, "pin"),
    ],
)
async def test_bad_card_is_422_naming_the_field_and_never_echoing_number_or_cvc(
    shop: Shop, card: dict[str, object], field: str
) -> None:
    body = _card(VISA, card)
    response = await shop.client.post("/api/v1/payment-methods", json=body, headers=shop.issuer.headers("u1"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "card", field]
    assert "4242424242" not in response.text
    assert "4242 4242" not in response.text
    assert '"739"' not in response.text and '"12a"' not in response.text


async def test_a_card_expiring_this_month_is_accepted_and_last_month_is_not(shop: Shop) -> None:
    today = date.today()
    this_month = _card(VISA, exp_month=today.month, exp_year=today.year)
    response = await shop.client.post("/api/v1/payment-methods", json=this_month, headers=shop.issuer.headers("u1"))
    assert response.status_code == 201

    if today.month > 1:
        last_month = _card(VISA, exp_month=today.month - 1, exp_year=today.year)
        response = await shop.client.post("/api/v1/payment-methods", json=last_month, headers=shop.issuer.headers("u1"))
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "card", "exp_month"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "card"}, "card"),
        ({"type": "paypal"}, "paypal"),
        ({"type": "paypal", "paypal": {"email": "a@b.example"}, "card": _card(VISA)["card"]}, "card"),
        ({"type": "paypal", "paypal": {"email": "not-an-email"}}, "email"),
        ({"type": "bitcoin"}, "type"),
        ({"type": "card", "card": _card(VISA)["card"], "user_id": "someone-else"}, "user_id"),
    ],
)
async def test_bad_method_bodies_are_422(shop: Shop, body: dict[str, object], field: str) -> None:
    response = await shop.client.post("/api/v1/payment-methods", json=body, headers=shop.issuer.headers("u1"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field


async def test_saving_a_method_needs_a_valid_token(shop: Shop) -> None:
    response = await shop.client.post("/api/v1/payment-methods", json=_card(VISA))
    assert response.status_code == 401
    forged = {"Authorization": "Bearer not.a.token"}
    response = await shop.client.post("/api/v1/payment-methods", json=_card(VISA), headers=forged)
    assert response.status_code == 401


# ----------------------------------------------------------------------------------------------- charges


@pytest.mark.parametrize("number", [VISA, MASTERCARD, AMEX, "6011111111111117"])
async def test_charge_captures_with_a_succeeding_card(shop: Shop, number: str) -> None:
    method = await shop.add_card("u1", number)
    order_id = new_order_id()

    response = await shop.charge("u1", method["id"], order_id=order_id, amount=2500)

    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment == {
        "id": payment["id"],
        "order_id": order_id,
        "status": "succeeded",
        "amount": 2500,
        "currency": "EUR",
    }
    entries = await shop.rows("SELECT kind, amount FROM ledger_entries WHERE payment_id = :id", {"id": payment["id"]})
    assert sorted((e["kind"], e["amount"]) for e in entries) == [("authorization", 2500), ("capture", 2500)]
    [event] = await shop.events("payment.captured.v1")
    assert event["data"] == {
        "payment_id": payment["id"],
        "order_id": order_id,
        "user_id": "u1",
        "amount": 2500,
        "currency": "EUR",
        "method": "card",
    }
    assert await shop.events("payment.failed.v1") == []


@pytest.mark.parametrize("kind", ["paypal", "3ds"])
async def test_charge_with_paypal_or_a_3ds_card_requires_the_customers_action(shop: Shop, kind: str) -> None:
    method = await shop.add_paypal("u1") if kind == "paypal" else await shop.add_card("u1", THREE_D_SECURE)
    order_id = new_order_id()

    response = await shop.charge("u1", method["id"], order_id=order_id, amount=1500)

    assert response.status_code == 201
    payment = response.json()
    assert payment == {
        "id": payment["id"],
        "order_id": order_id,
        "status": "requires_action",
        "amount": 1500,
        "currency": "EUR",
        "next_action": {"type": "redirect_to_url", "url": f"/pay/{payment['id']}"},
    }
    assert await shop.rows("SELECT * FROM ledger_entries") == []  # nothing is held before the customer approves
    assert await shop.events() == []


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (DECLINED, "card_declined"),
        (INSUFFICIENT, "insufficient_funds"),
        (EXPIRED, "expired_card"),
        (INCORRECT_CVC, "incorrect_cvc"),
    ],
)
async def test_charge_is_declined_per_test_card(shop: Shop, number: str, code: str) -> None:
    method = await shop.add_card("u1", number)
    order_id = new_order_id()

    response = await shop.charge("u1", method["id"], order_id=order_id)

    assert response.status_code == 402
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "/problems/payment-declined"
    assert problem["code"] == problem["decline_code"] == code
    [payment] = await shop.rows("SELECT * FROM payments WHERE order_id = :o", {"o": order_id})
    assert payment["status"] == "canceled" and payment["code"] == code and problem["payment_id"] == payment["id"]
    assert await shop.rows("SELECT * FROM ledger_entries") == []
    [event] = await shop.events("payment.failed.v1")
    assert event["data"]["code"] == code and event["data"]["order_id"] == order_id
    assert event["data"]["payment_id"] == payment["id"] and event["data"]["user_id"] == "u1"
    assert await shop.events("payment.captured.v1") == []


async def test_a_processing_error_is_a_retryable_503_and_leaves_the_payment_processing(shop: Shop) -> None:
    method = await shop.add_card("u1", PROCESSING_ERROR)
    order_id = new_order_id()

    first = await shop.charge("u1", method["id"], order_id=order_id)
    retry = await shop.charge("u1", method["id"], order_id=order_id)

    for response in (first, retry):  # not stored: the retry really runs again
        assert response.status_code == 503 and response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "processing_error" and response.json()["retryable"] is True
        assert response.json()["type"] == "/problems/processing-error"
        assert "Idempotent-Replayed" not in response.headers and response.headers["Retry-After"]
    assert (await shop.payment(order_id)).json()["status"] == "processing"
    assert await shop.rows("SELECT * FROM idempotency") == []
    assert await shop.events() == []
    canceled = await shop.cancel(order_id)  # what orders does after its retries
    assert canceled.json() == {"order_id": order_id, "status": "canceled"}
    assert (await shop.payment(order_id)).json()["status"] == "canceled"


async def test_charge_with_another_users_method_is_422(shop: Shop) -> None:
    method = await shop.add_card("alice")

    response = await shop.charge("mallory", method["id"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "payment_method_id"]
    assert await shop.rows("SELECT * FROM payments") == []
    assert await shop.rows("SELECT * FROM idempotency") == []


async def test_charge_with_an_unknown_method_is_422(shop: Shop) -> None:
    response = await shop.charge("u1", "pm_does_not_exist")

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "payment_method_id"]


# ------------------------------------------------------------------------------------------------ cancel


async def test_cancel_after_capture_refunds_once_however_often_called(shop: Shop) -> None:
    method = await shop.add_card("u1")
    payment = (await shop.charge("u1", method["id"], amount=4200)).json()
    order_id = payment["order_id"]

    concurrent = await asyncio.gather(*(shop.cancel(order_id) for _ in range(3)))
    later = await shop.cancel(order_id)

    for response in (*concurrent, later):
        assert response.status_code == 200
        assert response.json() == {"order_id": order_id, "status": "refunded"}
    refunds = await shop.rows("SELECT amount FROM ledger_entries WHERE kind = 'refund'")
    assert refunds == [{"amount": -4200}]
    [event] = await shop.events("payment.refunded.v1")
    assert event["data"]["order_id"] == order_id and event["data"]["amount"] == 4200
    assert event["data"]["user_id"] == "u1"
    [row] = await shop.rows("SELECT status, amount_refunded FROM payments WHERE order_id = :o", {"o": order_id})
    assert row == {"status": "succeeded", "amount_refunded": 4200}


async def test_cancels_racing_each_other_refund_and_publish_once(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = (await shop.charge("u1", method["id"], amount=500)).json()["order_id"]
    held = shop.hold("refund")
    cancels = [asyncio.create_task(shop.cancel(order_id)) for _ in range(3)]
    await asyncio.wait_for(held.until("refund", 3), 5)  # all three saw "captured" and asked for a refund

    held.gate.set()
    responses = await asyncio.gather(*cancels)

    assert {r.json()["status"] for r in responses} == {"refunded"}
    assert len(await shop.rows("SELECT * FROM ledger_entries WHERE kind = 'refund'")) == 1
    assert len(await shop.events("payment.refunded.v1")) == 1


async def test_cancel_before_any_charge_refuses_a_later_charge(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()

    canceled = await shop.cancel(order_id)
    late = await shop.charge("u1", method["id"], order_id=order_id)
    again = await shop.cancel(order_id)

    assert canceled.status_code == 200 and canceled.json() == {"order_id": order_id, "status": "canceled"}
    assert late.status_code == 409 and late.json()["type"] == "/problems/payment-canceled"
    assert again.json() == {"order_id": order_id, "status": "canceled"}
    [row] = await shop.rows("SELECT status, amount FROM payments WHERE order_id = :o", {"o": order_id})
    assert row == {"status": "canceled", "amount": 0}
    assert await shop.rows("SELECT * FROM ledger_entries") == []


async def test_cancel_after_a_decline_records_canceled(shop: Shop) -> None:
    method = await shop.add_card("u1", DECLINED)
    order_id = new_order_id()
    await shop.charge("u1", method["id"], order_id=order_id)

    response = await shop.cancel(order_id)

    assert response.json() == {"order_id": order_id, "status": "canceled"}
    assert await shop.rows("SELECT * FROM ledger_entries") == []


async def test_cancel_while_the_provider_authorizes_cancels_and_the_late_hold_is_released(
    shop: Shop,
) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    held = shop.hold("authorize")
    charge = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id, amount=700))
    await held.entered.wait()

    canceled = await shop.cancel(order_id)  # the payment is processing: canceled at once
    held.gate.set()
    response = await charge

    assert canceled.json()["status"] == "canceled"
    assert response.status_code == 409 and response.json()["type"] == "/problems/payment-canceled"
    assert held.calls.get("void") == 1  # the authorization that came back after the tombstone was voided
    assert await shop.rows("SELECT * FROM ledger_entries") == []


async def test_cancel_of_an_authorized_payment_voids_it_and_the_charge_is_refused(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    held = shop.hold("before_capture")
    charge = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id, amount=300))
    await held.entered.wait()

    canceled = await shop.cancel(order_id)
    held.gate.set()
    response = await charge

    assert canceled.json() == {"order_id": order_id, "status": "voided"}
    assert response.status_code == 409 and response.json()["type"] == "/problems/payment-canceled"
    entries = await shop.rows("SELECT kind, amount FROM ledger_entries ORDER BY kind")
    assert [(e["kind"], e["amount"]) for e in entries] == [("authorization", 300), ("void", -300)]
    assert await shop.service.store.reconcile() == []


async def test_cancel_after_the_provider_captured_but_before_it_was_recorded_refunds(shop: Shop) -> None:
    method = await shop.add_card("u1")
    order_id = new_order_id()
    held = shop.hold("after_capture")
    charge = asyncio.create_task(shop.charge("u1", method["id"], order_id=order_id, amount=900))
    await held.entered.wait()

    canceled = await shop.cancel(order_id)
    held.gate.set()
    response = await charge

    assert canceled.json() == {"order_id": order_id, "status": "refunded"}
    assert response.status_code == 409 and response.json()["type"] == "/problems/payment-canceled"
    entries = await shop.rows("SELECT kind, amount FROM ledger_entries ORDER BY kind")
    assert [(e["kind"], e["amount"]) for e in entries] == [
        ("authorization", 900),
        ("capture", 900),
        ("refund", -900),
    ]
    assert await shop.service.store.reconcile() == []


async def test_ledger_sums_reconcile_with_every_payment_state(shop: Shop) -> None:
    card, declined, secure = (
        await shop.add_card("u1"),
        await shop.add_card("u1", DECLINED),
        await shop.add_card("u1", THREE_D_SECURE),
    )
    await shop.charge("u1", card["id"], amount=1000)
    refunded = (await shop.charge("u1", card["id"], amount=2000)).json()
    await shop.cancel(refunded["order_id"])
    partly = (await shop.charge("u1", card["id"], amount=3000)).json()
    await shop.refund(partly["order_id"], 1200)
    await shop.charge("u1", declined["id"], amount=4000)
    await shop.charge("u1", secure["id"], amount=5000)
    await shop.cancel(new_order_id())

    sums = await shop.rows(
        "SELECT p.status, p.amount, p.amount_refunded, "
        "COALESCE(SUM(CASE WHEN e.kind IN ('authorization', 'void') THEN e.amount END), 0) AS held, "
        "COALESCE(SUM(CASE WHEN e.kind IN ('capture', 'refund') THEN e.amount END), 0) AS captured "
        "FROM payments p LEFT JOIN ledger_entries e ON e.payment_id = p.id "
        "GROUP BY p.id, p.status, p.amount, p.amount_refunded ORDER BY p.amount"
    )

    assert [(r["status"], r["amount"], r["amount_refunded"], r["held"], r["captured"]) for r in sums] == [
        ("canceled", 0, 0, 0, 0),
        ("succeeded", 1000, 0, 1000, 1000),
        ("succeeded", 2000, 2000, 2000, 0),
        ("succeeded", 3000, 1200, 3000, 1800),
        ("canceled", 4000, 0, 0, 0),
        ("requires_action", 5000, 0, 0, 0),
    ]
    assert await shop.service.store.reconcile() == []


async def test_reconcile_reports_a_payment_whose_ledger_disagrees(shop: Shop) -> None:
    card = await shop.add_card("u1")
    payment = (await shop.charge("u1", card["id"], amount=1000)).json()
    await shop.service.db.execute("DELETE FROM ledger_entries WHERE kind = 'capture'")

    [mismatch] = await shop.service.store.reconcile()

    assert mismatch.payment_id == payment["id"] and mismatch.actual.captured == 0


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change",
    [
        {"amount": -5},
        {"amount": 0},
        {"amount": 10.5},
        {"amount": "100"},
        {"amount": True},
        {"amount": 10**20},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"order_id": ""},
        {"order_id": "x" * 256},
        {"payment_method_id": None},
        {"surprise": 1},
    ],
)
async def test_bad_charge_bodies_are_422_problems(shop: Shop, change: dict[str, object]) -> None:
    method = await shop.add_card("u1")
    body = {
        "order_id": "o1",
        "user_id": "u1",
        "amount": 100,
        "currency": "EUR",
        "payment_method_id": method["id"],
    }
    body.update(change)

    response = await shop.client.post("/internal/v1/payments", json=body, headers={"Idempotency-Key": "o1"})

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert await shop.rows("SELECT * FROM payments") == []


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        ("/internal/v1/payments", b'{"order_id": "o1",', {"Idempotency-Key": "o1"}),
        ("/internal/v1/payments", b"[]", {"Idempotency-Key": "o1"}),
        ("/internal/v1/payments", b"null", {"Idempotency-Key": "o1"}),
        ("/internal/v1/payments", b"\xff\xfe", {"Idempotency-Key": "o1"}),
        ("/api/v1/payment-methods", b'{"type": "card", "card": ', {}),
        ("/api/v1/payment-methods", b'"card"', {}),
        ("/internal/v1/payments/o1/refund", b'{"amount": ', {"Idempotency-Key": "k"}),
        ("/internal/v1/payments/o1/refund", b"null", {"Idempotency-Key": "k"}),
        ("/internal/v1/payments/o1/refund", b'{"amount": 1e400}', {"Idempotency-Key": "k"}),
        ("/api/v1/payments/pay_x/action", b'{"decision"', {}),
        ("/api/v1/payments/pay_x/action", b"[1, 2]", {}),
        ("/api/v1/payments/pay_x/action", b'{"decision": "approve"}', {"Idempotency-Key": "a b"}),
    ],
)
async def test_malformed_bodies_are_4xx_problems(
    shop: Shop, path: str, content: bytes, headers: dict[str, str]
) -> None:
    headers = {"content-type": "application/json", **headers, **shop.issuer.headers("u1")}

    response = await shop.client.post(path, content=content, headers=headers)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_internal_routes_answer_as_fastapi_does(shop: Shop) -> None:
    """The internal routes are lean routes (microshop_kit.lean): each request answered byte for byte as FastAPI's
    own handling of the route answers it; a write is sent twice, so each is one the route replays."""
    method = await shop.add_card("u1")
    declined = await shop.add_card("u1", number="4000000000000002")
    body = {"order_id": "o1", "user_id": "u1", "amount": 1999, "currency": "EUR", "payment_method_id": method["id"]}
    key = {"Idempotency-Key": "o1"}
    checks: list[LeanCheck] = [
        ("POST", "/internal/v1/payments", True, {"json": body, "headers": key}),
        ("POST", "/internal/v1/payments", True, {"json": {**body, "amount": 5}, "headers": key}),  # key reused
        (
            "POST",
            "/internal/v1/payments",
            True,
            {
                "json": {**body, "order_id": "o2", "payment_method_id": declined["id"]},
                "headers": {"Idempotency-Key": "o2"},
            },
        ),
        ("POST", "/internal/v1/payments", False, {"json": body}),  # no Idempotency-Key
        ("POST", "/internal/v1/payments", False, {"json": {**body, "amount": -1}, "headers": key}),
        (
            "POST",
            "/internal/v1/payments",
            False,
            {"content": b"null", "headers": {**key, "content-type": "application/json"}},
        ),
        ("GET", "/internal/v1/payments/o1", True, {}),
        ("GET", "/internal/v1/payments/nope", True, {}),
        (
            "POST",
            "/internal/v1/payments/o1/refund",
            True,
            {"json": {"amount": 500}, "headers": {"Idempotency-Key": "r1"}},
        ),
        (
            "POST",
            "/internal/v1/payments/o1/refund",
            False,
            {"json": {"amount": "lots"}, "headers": {"Idempotency-Key": "r2"}},
        ),
        ("POST", "/internal/v1/payments/o1/cancel", True, {}),
        (
            "POST",
            "/internal/v1/payments/o1/refund",
            True,
            {"json": {"amount": 1}, "headers": {"Idempotency-Key": "r3"}},
        ),
    ]
    replayed = ("idempotent-replayed",)  # the second of two requests with one Idempotency-Key is a replay
    statuses = await compare_each_with_fastapi(shop.client, checks, ignored_headers=replayed)
    assert statuses == [201, 422, 402, 422, 422, 422, 200, 404, 201, 422, 200, 409]


@pytest.mark.parametrize("key", [None, "", "k" * 256, "has space", "tab\tkey"])
async def test_a_missing_or_bad_idempotency_key_is_422(shop: Shop, key: str | None) -> None:
    method = await shop.add_card("u1")
    body = {
        "order_id": "o1",
        "user_id": "u1",
        "amount": 100,
        "currency": "EUR",
        "payment_method_id": method["id"],
    }
    headers = {} if key is None else {"Idempotency-Key": key}

    response = await shop.client.post("/internal/v1/payments", json=body, headers=headers)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_a_255_character_key_is_accepted(shop: Shop) -> None:
    method = await shop.add_card("u1")

    response = await shop.charge("u1", method["id"], key="k" * 255)

    assert response.status_code == 201


@pytest.mark.parametrize("path", ["/internal/v1/payments", "/api/v1/payment-methods"])
async def test_an_oversized_body_is_413(shop: Shop, path: str) -> None:
    content = b'{"pad": "' + b"x" * 100_000 + b'"}'
    headers = {"content-type": "application/json", "Idempotency-Key": "o1", **shop.issuer.headers("u1")}

    response = await shop.client.post(path, content=content, headers=headers)

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


async def test_too_long_ids_in_paths_are_422(shop: Shop) -> None:
    for response in (
        await shop.cancel("o" * 300),
        await shop.payment("o" * 300),
        await shop.refund("o" * 300, 100),
        await shop.view("u1", "p" * 65),
        await shop.act("u1", "p" * 65, "approve"),
    ):
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
        assert response.json()["errors"][0]["loc"][0] == "path"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
        "VALUES ('x', :p, 'capture', 1, 'EUR', 'now')",
        "INSERT INTO ledger_entries (id, payment_id, kind, amount, currency, created_at) "
        "VALUES ('x', :p, 'refund', -1, 'EUR', 'now')",
        "INSERT INTO refunds (id, payment_id, key, amount, status, created_at) "
        "VALUES ('r', :p, 'k', 0, 'pending', 'now')",
        "UPDATE payments SET amount_refunded = amount + 1 WHERE id = :p",
        "INSERT INTO payments (id, order_id, amount, status, created_at, updated_at) "
        "VALUES ('x', :o, 0, 'canceled', 'now', 'now')",
        "UPDATE payments SET status = 'paid' WHERE id = :p",
        "UPDATE payments SET amount = -1 WHERE id = :p",
        "INSERT INTO idempotency (key, request_hash, state, created_at, locked_at) "
        "VALUES ('k', 'h', 'maybe', 'now', 'now')",
    ],
)
async def test_the_schema_refuses_what_the_invariants_forbid(shop: Shop, sql: str) -> None:
    card = await shop.add_card("u1")
    payment = (await shop.charge("u1", card["id"])).json()

    with pytest.raises(IntegrityError):
        async with shop.service.db.transaction() as tx:
            await tx.execute(sql, {"p": payment["id"], "o": payment["order_id"]})

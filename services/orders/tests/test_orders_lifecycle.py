"""Payments that wait for the customer, provider errors, cancellation, shipping and the payments circuit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from microshop_contracts import Envelope, PaymentCaptured, PaymentFailed
from microshop_kit.db import Database
from microshop_orders.events import PaymentEvents
from microshop_orders.store import OrderStore
from microshop_orders.testing import Harness, Upstreams, run_harness

WAITING = ("PENDING", "AWAITING_PAYMENT")


async def _awaiting(shop: Harness) -> dict[str, object]:
    await shop.cart(("MUG-1", 1))
    response = await shop.order("pm_3ds")
    assert response.status_code == 202, response.text
    order = response.json()
    assert order["status"] == "AWAITING_PAYMENT"
    assert order["next_action"] == {"type": "redirect_to_url", "url": f"/pay/pay_{order['id'][:8]}"}
    assert response.headers["location"] == f"/api/v1/orders/{order['id']}"
    return dict(order)


async def test_payment_needing_approval_waits_then_confirms_when_payments_says_succeeded(shop: Harness) -> None:
    order = await _awaiting(shop)
    assert shop.fake.stock["MUG-1"] == 9, "the stock stays reserved while the customer approves"
    shop.fake.action_outcome = {"status": "succeeded"}
    done = await shop.wait_order(str(order["id"]), until=WAITING)
    assert done["status"] == "CONFIRMED"
    assert done["next_action"] is None
    assert [t["status"] for t in done["timeline"]] == ["PENDING", "AWAITING_PAYMENT", "PENDING", "CONFIRMED"]
    assert shop.fake.reservations[done["id"]] == "commit"


async def test_denied_approval_rejects_with_the_reason_and_releases_the_stock(shop: Harness) -> None:
    order = await _awaiting(shop)
    shop.fake.action_outcome = {"status": "failed", "code": "authentication_failed"}
    done = await shop.wait_order(str(order["id"]), until=WAITING)
    assert done["status"] == "REJECTED"
    assert "not approved" in done["reason"]
    assert shop.fake.reservations[done["id"]] == "release"
    assert shop.fake.charges[done["id"]] == "canceled"
    assert shop.outbox_types() == ["order.rejected.v1"]


async def test_abandoned_approval_expires_and_releases_the_stock(
    tmp_path: Path, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    async for shop in run_harness(tmp_path, url, fake, action_timeout_seconds=0.5, payment_poll_seconds=0.1):
        order = await _awaiting(shop)
        done = await shop.wait_order(str(order["id"]), until=WAITING)
        assert done["status"] == "REJECTED"
        assert "not completed in time" in done["reason"]
        assert fake.charges[done["id"]] == "canceled", "the waiting payment is cancelled, so it cannot complete"
        assert fake.reservations[done["id"]] == "release"


async def _deliver(shop: Harness, order_id: str, event: PaymentCaptured | PaymentFailed) -> None:
    """Hand an event to the orders consumer as the bus would: effects and inbox row in one transaction."""
    db: Database = shop.app.state.kit.database
    orders = shop.app.state.orders
    consumer = PaymentEvents(OrderStore(db), orders.saga.start)
    handler = consumer.handlers()[event.TYPE]
    async with db.transaction() as tx:
        await handler(tx, Envelope.wrap(event, source="payments"))


@pytest.mark.parametrize(("event_type", "expected"), [(PaymentCaptured, "CONFIRMED"), (PaymentFailed, "REJECTED")])
async def test_payment_event_resumes_the_waiting_order_without_a_poll(
    tmp_path: Path, upstreams: tuple[Upstreams, str], event_type: type, expected: str
) -> None:
    fake, url = upstreams
    async for shop in run_harness(tmp_path, url, fake, payment_poll_seconds=60):
        order = await _awaiting(shop)
        fields = {"payment_id": "pay_1", "order_id": order["id"], "amount": 1200, "currency": "EUR"}
        event = (
            event_type(**fields, method="card")
            if event_type is PaymentCaptured
            else event_type(**fields, code="payment_denied")
        )
        if expected == "CONFIRMED":
            fake.charges[str(order["id"])] = "captured"
        polls = fake.calls.count("poll")
        await _deliver(shop, str(order["id"]), event)
        done = await shop.wait_order(str(order["id"]), until=WAITING, seconds=3)
        assert done["status"] == expected
        assert fake.calls.count("poll") == polls, "the event alone resumed the order"


async def test_provider_processing_error_is_retried_then_rejected(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    response = await shop.order("pm_flaky")
    order = await shop.wait_order(response.json()["id"])
    assert order["status"] == "REJECTED"
    assert "could not process your payment" in order["reason"]
    assert shop.fake.calls.count("charge") == 3, "three attempts (ORDERS_PAYMENT_ATTEMPTS), then a reason"
    assert shop.fake.reservations[order["id"]] == "release"


async def test_cancelling_a_confirmed_order_refunds_and_returns_the_stock(shop: Harness) -> None:
    await shop.cart(("MUG-1", 2))
    order = (await shop.order()).json()
    response = await shop.client.post(f"/api/v1/orders/{order['id']}/cancel", headers=shop.auth)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["refunded"] == order["total"]
    assert shop.fake.charges[order["id"]] == "refunded"
    assert shop.fake.reservations[order["id"]] == "return"
    assert shop.outbox_types() == ["order.confirmed.v1", "order.cancelled.v1"]
    again = await shop.client.post(f"/api/v1/orders/{order['id']}/cancel", headers=shop.auth)
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/order-state"


async def test_cancelling_while_the_payment_waits_cancels_it_and_releases_the_stock(shop: Harness) -> None:
    order = await _awaiting(shop)
    response = await shop.client.post(f"/api/v1/orders/{order['id']}/cancel", headers=shop.auth)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["refunded"] == 0
    assert shop.fake.charges[str(order["id"])] == "canceled"
    assert shop.fake.reservations[str(order["id"])] == "release"


async def test_a_stranger_cannot_cancel_or_see_an_order(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    order = (await shop.order()).json()
    stranger = shop.issuer.headers(str(uuid.uuid4()))
    response = await shop.client.post(f"/api/v1/orders/{order['id']}/cancel", headers=stranger)
    assert response.status_code == 404
    assert (await shop.wait_order(order["id"]))["status"] == "CONFIRMED"


async def test_admin_ships_then_delivers_and_shipped_orders_cannot_be_cancelled(shop: Harness) -> None:
    await shop.cart(("MUG-1", 1))
    order_id = (await shop.order()).json()["id"]
    ship = {"carrier": "DHL", "tracking_number": "JD0146000033"}
    assert (
        await shop.client.post(f"/api/v1/admin/orders/{order_id}/ship", json=ship, headers=shop.auth)
    ).status_code == 403
    early = await shop.client.post(f"/api/v1/admin/orders/{order_id}/deliver", headers=shop.admin)
    assert early.status_code == 409
    shipped = await shop.client.post(f"/api/v1/admin/orders/{order_id}/ship", json=ship, headers=shop.admin)
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["shipment"] == ship
    refused = await shop.client.post(f"/api/v1/orders/{order_id}/cancel", headers=shop.auth)
    assert refused.status_code == 409
    delivered = await shop.client.post(f"/api/v1/admin/orders/{order_id}/deliver", headers=shop.admin)
    assert delivered.json()["status"] == "DELIVERED"
    assert [t["status"] for t in delivered.json()["timeline"]] == ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED"]
    assert shop.outbox_types() == ["order.confirmed.v1", "order.shipped.v1", "order.delivered.v1"]


async def test_bad_tracking_number_names_the_field(shop: Harness) -> None:
    response = await shop.client.post(
        f"/api/v1/admin/orders/{uuid.uuid4()}/ship",
        json={"carrier": "DHL", "tracking_number": "<>"},
        headers=shop.admin,
    )
    assert response.status_code == 422
    assert "tracking_number" in response.text


async def test_checkout_fails_fast_while_the_payments_circuit_is_open(
    tmp_path: Path, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    fake.payments_down = True
    async for shop in run_harness(tmp_path, url, fake, checkout_budget_seconds=0.5, breaker_open_seconds=30):
        await shop.cart(("MUG-1", 1))
        statuses = []
        for _ in range(8):
            response = await shop.order()
            statuses.append(response.status_code)
            if response.status_code == 503:
                break
        assert statuses[-1] == 503, statuses
        started = time.perf_counter()
        refused = await shop.order()
        assert time.perf_counter() - started < 0.2
        assert refused.json()["type"] == "/problems/payments-unavailable"
        assert "circuit open" in refused.json()["detail"]
        assert (await shop.client.get("/api/v1/cart", headers=shop.auth)).status_code == 200


def _migrated(folder: Path) -> Path:
    """A SQLite file with every orders migration applied."""

    async def migrate() -> None:
        from microshop_kit.db import connect
        from microshop_orders.app import MIGRATIONS

        db = await connect(f"sqlite:///{folder / 'orders.db'}")
        await db.migrate("orders", MIGRATIONS)
        await db.close()

    asyncio.run(migrate())
    return folder / "orders.db"


def test_migrations_keep_the_status_constraint(tmp_path: Path) -> None:
    """The rebuilt orders table still refuses an unknown status (checked on a migrated SQLite file)."""

    with sqlite3.connect(_migrated(tmp_path)) as conn:
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'orders'").fetchone()[0]
        fks = conn.execute("PRAGMA foreign_key_list(order_timeline)").fetchall()
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO orders (id, user_id, status, saga_step, lines, total, currency, shipping_address, "
                "payment_method_id, next_attempt_at, created_at, updated_at) "
                "VALUES ('o', 'u', 'PAID', 'started', '[]', 0, 'EUR', '{}', 'pm_x', 'now', 'now', 'now')"
            )
    assert "'AWAITING_PAYMENT'" in ddl and "'SHIPPED'" in ddl
    assert [fk[2] for fk in fks] == ["orders"]


def test_an_orders_idempotency_key_is_found_by_the_order_not_by_walking_the_customers_keys(tmp_path: Path) -> None:
    """Storing the answer a key replays (in the confirming transaction) must not cost more for a customer with
    many orders: the migrated schema finds the key through its order id."""

    with sqlite3.connect(_migrated(tmp_path)) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN UPDATE idempotency_keys SET state = 'done' "
            "WHERE user_id = 'u' AND order_id = 'o' AND state = 'in_flight'"
        ).fetchall()
        conn.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, state, created_at) "
            "VALUES ('u', 'k1', 'h', 'o', 'done', 'now')"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, state, created_at) "
                "VALUES ('u', 'k2', 'h', 'o', 'done', 'now')"
            )
    assert "USING INDEX idempotency_keys_by_order (order_id=?)" in plan[0][3]

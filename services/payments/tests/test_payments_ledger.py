"""A hypothesis state machine over charges (every outcome), customer actions, cancels and refunds through the
API: after every step each payment matches a plain model and the ledger reconciles with it (SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from typer.testing import CliRunner

from microshop_kit import db as dbmod
from microshop_kit.testing import JwtIssuer, jwks_server, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.__main__ import cli
from microshop_payments.testing import DECLINED, PROCESSING_ERROR, THREE_D_SECURE, VISA, Shop

ORDERS = st.sampled_from([f"ord_{i}" for i in range(6)])  # few ids: replays and late calls happen often
KINDS = st.sampled_from(["visa", "declined", "3ds", "paypal", "processing_error"])
CARDS = {"visa": VISA, "declined": DECLINED, "3ds": THREE_D_SECURE, "processing_error": PROCESSING_ERROR}


@dataclass
class Model:
    """What a payment must be: its status, amount, refunded total and the customer's decision."""

    kind: str
    amount: int
    status: str
    refunded: int = 0
    decision: str | None = None


class PaymentsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.tmp = tempfile.TemporaryDirectory()
        issuer = JwtIssuer()
        jwks_url = self.run(self.stack.enter_async_context(jwks_server(issuer)))
        app = create_app(PaymentsSettings(data_dir=Path(self.tmp.name), jwks_url=jwks_url, broker_url=None))
        client = self.run(self.stack.enter_async_context(running_app(app)))
        self.shop = Shop(app, client, issuer, Path(self.tmp.name))
        self.methods = {kind: self._method(kind) for kind in ("visa", "declined", "3ds", "paypal", "processing_error")}
        self.payments: dict[str, Model] = {}
        self.tombstones: set[str] = set()
        #: The body of the first charge of a canceled order: its retries send the same.
        self.late_charges: dict[str, tuple[str, int]] = {}
        self.refund_keys = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()
        self.tmp.cleanup()

    def _method(self, kind: str) -> str:
        method = self.run(self.shop.add_paypal("u1") if kind == "paypal" else self.shop.add_card("u1", CARDS[kind]))
        method_id: str = method["id"]
        return method_id

    @rule(order=ORDERS, kind=KINDS, amount=st.integers(1, 5000))
    def charge(self, order: str, kind: str, amount: int) -> None:
        known = self.payments.get(order)
        if known is not None:  # a retry of the same charge (same key, same body)
            kind, amount = known.kind, known.amount
        kind, amount = (
            self.late_charges.setdefault(order, (kind, amount)) if order in self.tombstones else (kind, amount)
        )
        response = self.run(self.shop.charge("u1", self.methods[kind], order_id=order, amount=amount))
        if order in self.tombstones:
            assert response.status_code == 409 and response.json()["type"] == "/problems/payment-canceled"
            return
        if known is None:
            expected = {"visa": "succeeded", "declined": "canceled", "processing_error": "processing"}
            self.payments[order] = Model(kind, amount, expected.get(kind, "requires_action"))
            known = self.payments[order]
        codes = {"visa": 201, "declined": 402, "3ds": 201, "paypal": 201, "processing_error": 503}
        if kind == "processing_error" and known.status == "canceled":
            assert response.status_code == 409  # not stored: the retry ran again and found it canceled
        else:
            assert response.status_code == codes[kind], response.text

    @rule(order=ORDERS, decision=st.sampled_from(["approve", "deny"]))
    def act(self, order: str, decision: str) -> None:
        known = self.payments.get(order)
        if known is None:
            return
        payment_id = self.run(self.shop.payment(order)).json()["id"]
        response = self.run(self.shop.act("u1", payment_id, decision))
        if known.status == "requires_action":
            known.status, known.decision = ("succeeded" if decision == "approve" else "canceled"), decision
        elif known.decision != decision:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        assert response.json()["status"] == known.status

    @rule(order=ORDERS)
    def cancel(self, order: str) -> None:
        response = self.run(self.shop.cancel(order))
        assert response.status_code == 200, response.text
        known = self.payments.get(order)
        if known is None:
            self.tombstones.add(order)
        elif known.status == "succeeded":
            known.refunded = known.amount
        elif known.status in ("processing", "requires_action"):
            known.status = "canceled"

    @rule(order=ORDERS, amount=st.none() | st.integers(1, 3000))
    def refund(self, order: str, amount: int | None) -> None:
        self.refund_keys += 1
        response = self.run(self.shop.refund(order, amount, key=f"r{self.refund_keys}"))
        known = self.payments.get(order)
        if known is None:
            assert response.status_code == (409 if order in self.tombstones else 404)
            return
        left = known.amount - known.refunded
        if known.status != "succeeded" or left == 0:
            assert response.status_code == 409, response.text
        elif amount is not None and amount > left:
            assert response.status_code == 422 and response.json()["refundable"] == left
        else:
            assert response.status_code == 201, response.text
            known.refunded += left if amount is None else amount

    @invariant()
    def payments_match_the_model_and_the_ledger_reconciles(self) -> None:
        rows = self.run(self.shop.rows("SELECT order_id, status, amount, amount_refunded FROM payments"))
        actual = {r["order_id"]: (r["status"], r["amount"], r["amount_refunded"]) for r in rows}
        expected = {order: (m.status, m.amount, m.refunded) for order, m in self.payments.items()}
        expected.update({order: ("canceled", 0, 0) for order in self.tombstones})
        assert actual == expected
        assert self.run(self.shop.service.store.reconcile()) == []
        captured = self.run(self.shop.rows("SELECT COALESCE(SUM(amount), 0) AS total FROM ledger_entries"))
        net = sum(m.amount - m.refunded for m in self.payments.values() if m.status == "succeeded")
        held = sum(m.amount for m in self.payments.values() if m.status == "succeeded")
        assert captured[0]["total"] == held + net  # authorizations (kept after capture) plus net captures

    @invariant()
    def one_event_per_outcome(self) -> None:
        events = self.run(self.shop.events())
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(event["data"])
        succeeded = [m for m in self.payments.values() if m.status == "succeeded"]
        failed = [m for m in self.payments.values() if m.kind == "declined" or m.decision == "deny"]
        assert len(by_type.get("payment.captured.v1", [])) == len(succeeded)
        assert len(by_type.get("payment.failed.v1", [])) == len(failed)
        assert sum(e["amount"] for e in by_type.get("payment.refunded.v1", [])) == sum(m.refunded for m in succeeded)


PaymentsMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_payments_state_machine = PaymentsMachine.TestCase


async def _capture_without_its_ledger_rows(path: Path) -> None:
    database = await dbmod.connect(f"sqlite:///{path}")
    try:
        await database.execute(
            "INSERT INTO payments (id, order_id, amount, currency, status, created_at, updated_at) "
            "VALUES ('pay_1', 'ord_1', 700, 'EUR', 'succeeded', 'now', 'now')"
        )
    finally:
        await database.close()


def test_the_reconcile_command_exits_1_naming_a_payment_that_does_not_reconcile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0

    clean = runner.invoke(cli, ["reconcile"])
    asyncio.run(_capture_without_its_ledger_rows(tmp_path / "payments.db"))
    broken = runner.invoke(cli, ["reconcile"])

    assert clean.exit_code == 0 and "reconciles" in clean.output
    assert broken.exit_code == 1
    assert "pay_1 succeeded: expected held=700 captured=700, ledger held=0 captured=0" in broken.output

"""No card number and no CVC anywhere (PCI DSS 3.3.1, 3.4.1): not in any table of the database (SQLite and
PostgreSQL), the database files, the log output, an outbox event or an HTTP answer."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from microshop_kit.testing import JwtIssuer, postgres_database, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.domain import luhn_valid
from microshop_payments.testing import CVCS, FUTURE_YEAR, TEST_CARDS, THREE_D_SECURE, Shop, new_order_id

#: A CVC next to its name in any serialisation (JSON, repr, key=value), not inside a longer token or a date.
_CVC_NEAR_NAME = re.compile(rb"(?i)(?<![a-z0-9])(?:cvc|cvv|cv2|csc)2?\W{0,6}\d{3,4}(?![\d-])")
#: A run of 13-19 digits (spaces or dashes allowed between groups) not inside a longer token.
_DIGIT_RUN = re.compile(rb"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")
#: Keys that must never appear in an event.
_CARD_KEYS = {"number", "card_number", "pan", "cvc", "cvv", "cvc2", "cvv2"}


def _forms(number: str) -> list[bytes]:
    spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return [number.encode(), spaced.encode()]


def _luhn_runs(data: bytes) -> list[bytes]:
    runs = []
    for match in _DIGIT_RUN.finditer(data):
        digits = re.sub(rb"\D", b"", match.group())
        if luhn_valid(digits.decode()):
            runs.append(match.group())
    return runs


def _assert_clean(where: str, data: bytes) -> None:
    for number in TEST_CARDS:
        for form in _forms(number):
            assert form not in data, f"card number ...{number[-4:]} found in {where}"
    assert not _CVC_NEAR_NAME.search(data), f"a CVC found in {where}"
    assert _luhn_runs(data) == [], f"a Luhn-valid number found in {where}"


async def _exercise(shop: Shop) -> list[httpx.Response]:
    """Every path a card number travels: saved (plain and spaced), rejected, charged with every test card,
    declined, retried, approved and denied, refunded in part and in full, canceled."""
    responses: list[httpx.Response] = []
    for number in TEST_CARDS:
        cvc = "7391" if number.startswith("37") else "739"
        method = await shop.add_card("u1", number, cvc=cvc)
        spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        await shop.add_card("u1", spaced, cvc=cvc)
        order_id = new_order_id()
        charged = await shop.charge("u1", method["id"], order_id=order_id, amount=2000)
        responses += [charged, await shop.charge("u1", method["id"], order_id=order_id, amount=2000)]
        if charged.status_code == 201 and charged.json()["status"] == "succeeded":
            responses += [await shop.refund(order_id, 500), await shop.payment(order_id)]
        responses += [await shop.cancel(order_id), await shop.payment(order_id)]
    for decision in ("approve", "deny"):
        method = await shop.add_card("u1", THREE_D_SECURE)
        payment = (await shop.charge("u1", method["id"], amount=3000)).json()
        responses += [await shop.act("u1", payment["id"], decision), await shop.view("u1", payment["id"])]
    paypal = await shop.add_paypal("u1")
    payment = (await shop.charge("u1", paypal["id"], amount=4000)).json()
    responses.append(await shop.act("u1", payment["id"], "approve"))
    for bad in (
        {"number": "4242424242424241"},
        {"exp_year": 2001},
        {"cvc": "73a"},
        {"extra": "4242424242424242"},
        {"number": "4242 4242 4242 4242 4242 4242 4242"},
    ):
        card = {"number": "4242424242424242", "exp_month": 1, "exp_year": FUTURE_YEAR, "cvc": "739", **bad}
        response = await shop.client.post(
            "/api/v1/payment-methods", json={"type": "card", "card": card}, headers=shop.issuer.headers("u1")
        )
        assert response.status_code == 422
        responses.append(response)
    return responses


async def _table_values(shop: Shop) -> dict[str, list[Any]]:
    """Every value of every table of the service's database, by table."""
    if shop.service.db.dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"
    values: dict[str, list[Any]] = {}
    for table in await shop.rows(sql):
        rows = await shop.rows(f'SELECT * FROM "{table["name"]}"')
        values[table["name"]] = [value for row in rows for value in row.values()]
    return values


def _walk(value: Any) -> list[tuple[str, Any]]:
    """Every (key, leaf value) of a JSON document."""
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in [(key, item), *_walk(item)]]
    if isinstance(value, list):
        return [pair for item in value for pair in _walk(item)]
    return []


def _read_all(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _without_random_ids(output: str) -> bytes:
    """The log output minus trace, span and request ids: random hex that may, rarely, be all digits."""
    lines = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        for key in ("trace_id", "span_id", "request_id"):
            record.pop(key, None)
        lines.append(json.dumps(record))
    return "\n".join(lines).encode()


async def _assert_no_card_data(shop: Shop) -> None:
    """The database's tables and every outbox event hold no card number and no CVC."""
    tables = await _table_values(shop)
    assert {"payments", "payment_methods", "ledger_entries", "refunds", "idempotency", "outbox"} <= set(tables)
    assert len(tables["payment_methods"]) > 0 and len(tables["outbox"]) > 0
    for table, values in tables.items():
        text = "\n".join(str(value) for value in values)
        _assert_clean(f"table {table}", text.encode())
        assert not {str(value) for value in values} & set(CVCS), f"a CVC is stored as a value in {table}"
    events = await shop.events()
    assert {e["type"] for e in events} == {"payment.captured.v1", "payment.failed.v1", "payment.refunded.v1"}
    for event in events:
        _assert_clean(f"event {event['type']}", json.dumps(event).encode())
        pairs = _walk(event)
        assert not {key.lower() for key, _ in pairs} & _CARD_KEYS, f"a card field in {event['type']}"
        assert not {str(value) for _, value in pairs} & set(CVCS), f"a CVC in {event['type']}"


async def test_no_card_number_or_cvc_in_tables_files_logs_events_or_answers(
    tmp_path: Path,
    settings: PaymentsSettings,
    issuer: tuple[JwtIssuer, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings)
    async with running_app(app) as client:
        shop = Shop(app, client, issuer[0], tmp_path)
        responses = await _exercise(shop)
        await _assert_no_card_data(shop)
    logs = capfd.readouterr()
    log_bytes = _without_random_ids(logs.out + logs.err)
    files = _read_all(tmp_path)

    assert b"payment method saved" in log_bytes and b"payment refunded" in log_bytes  # the capture saw the logs
    assert any(path.suffix == ".db" for path in files)
    _assert_clean("logs", log_bytes)
    for path, data in files.items():
        _assert_clean(str(path), data)
    for response in responses:
        _assert_clean(f"the answer to {response.request.method} {response.request.url.path}", response.content)


@pytest.fixture
async def pg_settings(issuer: tuple[JwtIssuer, str], tmp_path: Path) -> AsyncIterator[PaymentsSettings]:
    async with postgres_database("payments") as url:
        yield PaymentsSettings(data_dir=tmp_path, database_url=url, jwks_url=issuer[1], broker_url=None)


@pytest.mark.infra
async def test_no_card_number_or_cvc_in_any_postgres_table_or_the_logs(
    pg_settings: PaymentsSettings,
    issuer: tuple[JwtIssuer, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = create_app(pg_settings)
    async with running_app(app) as client:
        shop = Shop(app, client, issuer[0], tmp_path)
        await _exercise(shop)
        await _assert_no_card_data(shop)
    logs = capfd.readouterr()

    _assert_clean("logs", _without_random_ids(logs.out + logs.err))


async def test_the_card_repr_never_shows_the_number_or_cvc() -> None:
    from microshop_payments.domain import check_card
    from microshop_payments.schemas import CardIn

    card = check_card("4242 4242 4242 4242", 12, FUTURE_YEAR, "739", date.today())
    card_in = CardIn(number="4242424242424242", exp_month=12, exp_year=FUTURE_YEAR, cvc="739")

    for text in (repr(card), str(card), repr(card_in), str(card_in)):
        assert "42424242" not in text and "739" not in text
    assert "4242" in repr(card) and "visa" in repr(card)


def test_the_scanner_finds_what_it_looks_for() -> None:
    """The checks above would catch a leak: each form of card data is found."""
    for leak in (
        b'{"number": "4000056655665556"}',  # a Luhn-valid card that is not a test card
        b"card=4242 4242 4242 4242",
        b'{"cvc": "739"}',
        b"cvv2=1234",
    ):
        with pytest.raises(AssertionError):
            _assert_clean("a leak", leak)
    _assert_clean("clean", b'{"last4": "4242", "created_at": "2026-01-05T10:00:00", "id": "pay_abc-cvc"}')

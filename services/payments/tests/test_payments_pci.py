"""No card number and no CVC anywhere: not in the database files nor any log line (PCI DSS 3.3.1, 3.4.1)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import date
from pathlib import Path

import pytest

from microshop_kit.testing import JwtIssuer, running_app
from microshop_payments import PaymentsSettings, create_app
from microshop_payments.domain import luhn_valid
from microshop_payments.testing import FUTURE_YEAR, TEST_CARDS, Shop

CVCS = ["739", "7391"]
#: A CVC next to its name in any serialisation (JSON, repr, key=value).
_CVC_NEAR_NAME = re.compile(rb"(?i)cv[cv2]\W{0,6}\d{3,4}")
#: A run of 13-19 digits (spaces or dashes allowed between groups) not inside a longer token.
_DIGIT_RUN = re.compile(rb"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")


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


async def _exercise(shop: Shop) -> None:
    """Every path a card number travels: saved (plain and spaced), rejected, charged, declined, refunded."""
    for number in TEST_CARDS:
        cvc = "7391" if number.startswith("37") else "739"
        method = await shop.add_card("u1", number, cvc=cvc)
        spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        await shop.add_card("u1", spaced, cvc=cvc)
        order_id = str(uuid.uuid4())
        await shop.charge("u1", method["id"], order_id=order_id)
        await shop.cancel(order_id)
    for bad in (
        {"number": "4242424242424241"},
        {"exp_year": 2001},
        {"cvc": "73a"},
        {"extra": "4242424242424242"},
    ):
        card = {"number": "4242424242424242", "exp_month": 1, "exp_year": FUTURE_YEAR, "cvc": "739", **bad}
        response = await shop.client.post(
            "/api/v1/payment-methods", json={"type": "card", "card": card}, headers=shop.issuer.headers("u1")
        )
        assert response.status_code == 422


async def test_no_card_number_or_cvc_in_the_database_files_or_the_logs(
    tmp_path: Path,
    settings: PaymentsSettings,
    issuer: tuple[JwtIssuer, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings)
    async with running_app(app) as client:
        shop = Shop(app, client, issuer[0], tmp_path)
        await _exercise(shop)
        values = await _text_values(shop)
    logs = capfd.readouterr()
    log_bytes = _without_random_ids(logs.out + logs.err)
    files = _read_all(tmp_path)

    assert b"payment method saved" in log_bytes  # the capture did see the service's log lines
    assert any(path.suffix == ".db" for path in files)
    for where, data in [("logs", log_bytes), *((str(path), data) for path, data in files.items())]:
        for number in TEST_CARDS:
            for form in _forms(number):
                assert form not in data, f"card number {number[-4:]} found in {where}"
        assert not _CVC_NEAR_NAME.search(data), f"a CVC found in {where}"
        assert _luhn_runs(data) == [], f"a Luhn-valid number found in {where}"
    assert not set(values) & set(CVCS), "a CVC is stored as a column value"


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


async def _text_values(shop: Shop) -> list[str]:
    """Every text value in every table of the service's database."""
    tables = await shop.rows("SELECT name FROM sqlite_master WHERE type = 'table'")
    values: list[str] = []
    for table in tables:
        for row in await shop.rows(f'SELECT * FROM "{table["name"]}"'):
            values += [value for value in row.values() if isinstance(value, str)]
    return values


async def test_the_card_repr_never_shows_the_number_or_cvc() -> None:
    from microshop_payments.api import CardIn
    from microshop_payments.domain import check_card

    card = check_card("4242 4242 4242 4242", 12, FUTURE_YEAR, "739", date.today())
    card_in = CardIn(number="4242424242424242", exp_month=12, exp_year=FUTURE_YEAR, cvc="739")

    for text in (repr(card), str(card), repr(card_in), str(card_in)):
        assert "42424242" not in text and "739" not in text
    assert "4242" in repr(card) and "visa" in repr(card)

"""Rules with no I/O: money formatting, the retry policy, header-safe text, addresses."""

from __future__ import annotations

import random

import pytest

from microshop_notifications.domain import RetryPolicy, SendFailure, Status, format_money, is_permanent_reply
from microshop_notifications.render import address_lines, one_line, order_ref


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1999, "EUR", "19.99 EUR"),
        (123456789, "usd", "1,234,567.89 USD"),
        (5, "EUR", "0.05 EUR"),
        (0, "EUR", "0.00 EUR"),
        (1500, "JPY", "1,500 JPY"),
        (1234, "KWD", "1.234 KWD"),
    ],
)
def test_money_is_formatted_from_minor_units_with_the_currency_exponent(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


def test_5xx_replies_are_permanent_and_4xx_transient() -> None:
    assert is_permanent_reply(550)
    assert is_permanent_reply(554)
    assert not is_permanent_reply(450)
    assert not is_permanent_reply(421)


def test_backoff_doubles_per_attempt_within_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=8, base_seconds=2.0, cap_seconds=30.0)
    rng = random.Random(7)
    for attempts, full in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (20, 30.0)]:
        delay = policy.delay(attempts, rng)
        assert full / 2 <= delay <= full


def test_a_transient_failure_is_retried_until_the_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=1.0, cap_seconds=10.0)
    transient = SendFailure("connection refused", permanent=False)

    assert policy.after_failure(transient, 1) is Status.FAILED
    assert policy.after_failure(transient, 2) is Status.FAILED
    assert policy.after_failure(transient, 3) is Status.DEAD


def test_a_permanent_failure_is_dead_at_once() -> None:
    policy = RetryPolicy(max_attempts=8, base_seconds=1.0, cap_seconds=10.0)

    assert policy.after_failure(SendFailure("550 no such user", permanent=True), 1) is Status.DEAD


def test_header_text_loses_line_breaks() -> None:
    assert one_line("Welcome\r\nBcc: victim@example.com") == "Welcome Bcc: victim@example.com"


def test_order_reference_is_the_first_block_of_the_id() -> None:
    assert order_ref("3f2a9c1e-0000-4000-8000-000000000000") == "3F2A9C1E"


def test_address_is_printed_like_an_envelope() -> None:
    address = {
        "name": "Ada Lovelace",
        "line1": "12 St James's Square",
        "line2": None,
        "city": "London",
        "postal_code": "SW1Y 4JH",
        "country": "GB",
    }

    assert address_lines(address) == ["Ada Lovelace", "12 St James's Square", "SW1Y 4JH London", "GB"]

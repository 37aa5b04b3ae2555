"""Payment rules without I/O: Luhn, brands, card checks, ledger balances per state, the simulated provider."""

from __future__ import annotations

from datetime import date

import pytest

from microshop_payments.domain import (
    Balances,
    CardRejected,
    EntryKind,
    Status,
    balances,
    card_brand,
    check_card,
    expected_balances,
    luhn_valid,
    request_hash,
    signed,
)
from microshop_payments.provider import MethodRef, ProviderStateError, SimulatedProvider

TODAY = date(2026, 6, 15)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4242424242424242", True),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("4000000000000002", True),
        ("4242424242424241", False),
        ("1234567812345678", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("340000000000009", "amex"),
        ("6011111111111117", "other"),
    ],
)
def test_brand_by_prefix(number: str, brand: str) -> None:
    assert card_brand(number) == brand


def test_a_valid_card_keeps_digits_only() -> None:
    card = check_card("4242 4242 4242 4242", 6, 2026, "123", TODAY)

    assert (card.number, card.brand, card.last4) == ("4242424242424242", "visa", "4242")


@pytest.mark.parametrize(
    ("number", "month", "year", "cvc", "field"),
    [
        ("4242424242424241", 6, 2027, "123", "card.number"),
        ("4242-4242-4242-4242", 6, 2027, "123", "card.number"),
        ("42424242424", 6, 2027, "123", "card.number"),
        ("4242424242424242", 5, 2026, "123", "card.exp_month"),
        ("4242424242424242", 12, 2025, "123", "card.exp_year"),
        ("4242424242424242", 12, 2047, "123", "card.exp_year"),
        ("4242424242424242", 13, 2027, "123", "card.exp_month"),
        ("4242424242424242", 6, 2027, "12", "card.cvc"),
        ("4242424242424242", 6, 2027, "١٢٣", "card.cvc"),
    ],
)
def test_card_rejections_name_the_field_and_never_the_number(
    number: str, month: int, year: int, cvc: str, field: str
) -> None:
    with pytest.raises(CardRejected) as caught:
        check_card(number, month, year, cvc, TODAY)

    assert caught.value.field == field
    assert number not in str(caught.value) and cvc not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "held", "captured"),
    [
        (Status.REQUIRES_CAPTURE, 500, 0),
        (Status.CAPTURED, 500, 500),
        (Status.REFUNDED, 500, 0),
        (Status.VOIDED, 0, 0),
        (Status.DECLINED, 0, 0),
        (Status.CANCELED, 0, 0),
    ],
)
def test_expected_balances_match_the_entries_each_state_has(status: Status, held: int, captured: int) -> None:
    entries_by_status = {
        Status.REQUIRES_CAPTURE: [EntryKind.AUTHORIZATION],
        Status.CAPTURED: [EntryKind.AUTHORIZATION, EntryKind.CAPTURE],
        Status.REFUNDED: [EntryKind.AUTHORIZATION, EntryKind.CAPTURE, EntryKind.REFUND],
        Status.VOIDED: [EntryKind.AUTHORIZATION, EntryKind.VOID],
        Status.DECLINED: [],
        Status.CANCELED: [],
    }
    entries = [(kind, signed(kind, 500)) for kind in entries_by_status[status]]

    assert expected_balances(status, 500) == balances(entries) == Balances(held, captured)


def test_request_hash_ignores_key_order_but_not_values() -> None:
    assert request_hash("s", {"a": 1, "b": 2}) == request_hash("s", {"b": 2, "a": 1})
    assert request_hash("s", {"a": 1}) != request_hash("s", {"a": 2})
    assert request_hash("s", {"a": 1}) != request_hash("t", {"a": 1})


async def test_simulated_provider_is_idempotent_per_key_and_follows_the_test_cards() -> None:
    provider = SimulatedProvider()
    card = MethodRef("card", "succeeds")

    first = await provider.authorize(100, "EUR", card, idempotency_key="o1")
    again = await provider.authorize(100, "EUR", card, idempotency_key="o1")
    declined = await provider.authorize(100, "EUR", MethodRef("card", "declined:card_declined"), idempotency_key="o2")

    assert first == again and first.approved and first.authorization_id
    assert not declined.approved and declined.decline_code == "card_declined"


async def test_simulated_provider_refuses_moves_a_real_provider_refuses() -> None:
    provider = SimulatedProvider()
    auth = await provider.authorize(100, "EUR", MethodRef("card", "succeeds"), idempotency_key="o1")
    assert auth.authorization_id is not None

    await provider.capture(auth.authorization_id, 100)
    await provider.capture(auth.authorization_id, 100)  # a repeat is a no-op
    with pytest.raises(ProviderStateError) as caught:
        await provider.void(auth.authorization_id)
    await provider.refund(auth.authorization_id, 100)
    await provider.refund(auth.authorization_id, 100)

    assert caught.value.state == "captured"
    with pytest.raises(ProviderStateError):
        await provider.capture(auth.authorization_id, 100)

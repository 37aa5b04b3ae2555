"""Payment rules without I/O: Luhn, brands, card checks, ledger balances per state, the simulated provider."""

from __future__ import annotations

from datetime import date

import pytest

from microshop_payments.domain import (
    Balances,
    CardRejected,
    EntryKind,
    RefundTooLarge,
    Status,
    balances,
    can_move,
    card_brand,
    check_card,
    expected_balances,
    luhn_valid,
    refund_amount,
    request_hash,
    signed,
)
from microshop_payments.provider import (
    PROCESSING_ERROR,
    AuthStatus,
    MethodRef,
    ProviderError,
    ProviderStateError,
    SimulatedProvider,
)

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
        (Status.PROCESSING, 0, 0),
        (Status.REQUIRES_ACTION, 0, 0),
        (Status.REQUIRES_CAPTURE, 500, 0),
        (Status.SUCCEEDED, 500, 500),
        (Status.CANCELED, 0, 0),
    ],
)
def test_expected_balances_match_the_entries_each_state_has(status: Status, held: int, captured: int) -> None:
    entries_by_status = {
        Status.PROCESSING: [],
        Status.REQUIRES_ACTION: [],
        Status.REQUIRES_CAPTURE: [EntryKind.AUTHORIZATION],
        Status.SUCCEEDED: [EntryKind.AUTHORIZATION, EntryKind.CAPTURE],
        Status.CANCELED: [],
    }
    entries = [(kind, signed(kind, 500)) for kind in entries_by_status[status]]

    assert expected_balances(status, 500) == balances(entries) == Balances(held, captured)


def test_a_voided_and_a_partly_refunded_payment_reconcile() -> None:
    voided = [(EntryKind.AUTHORIZATION, 500), (EntryKind.VOID, -500)]
    refunded = [
        (EntryKind.AUTHORIZATION, 500),
        (EntryKind.CAPTURE, 500),
        (EntryKind.REFUND, -120),
        (EntryKind.REFUND, -80),
    ]

    assert balances(voided) == expected_balances(Status.CANCELED, 500) == Balances(0, 0)
    assert balances(refunded) == expected_balances(Status.SUCCEEDED, 500, 200) == Balances(500, 300)


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        (Status.PROCESSING, {Status.REQUIRES_ACTION, Status.REQUIRES_CAPTURE, Status.CANCELED}),
        (Status.REQUIRES_ACTION, {Status.REQUIRES_CAPTURE, Status.CANCELED}),
        (Status.REQUIRES_CAPTURE, {Status.SUCCEEDED, Status.CANCELED}),
        (Status.SUCCEEDED, set()),
        (Status.CANCELED, set()),
    ],
)
def test_only_the_intent_moves_are_allowed(source: Status, targets: set[Status]) -> None:
    assert {target for target in Status if can_move(source, target)} == targets


@pytest.mark.parametrize(
    ("requested", "refunded", "pending", "expected"),
    [(None, 0, 0, 1000), (None, 300, 200, 500), (400, 300, 200, 400), (500, 300, 200, 500)],
)
def test_refund_amount_defaults_to_what_is_left(
    requested: int | None, refunded: int, pending: int, expected: int
) -> None:
    assert refund_amount(requested, 1000, refunded, pending) == expected


def test_a_refund_beyond_what_is_left_is_refused_with_what_is_left() -> None:
    with pytest.raises(RefundTooLarge) as caught:
        refund_amount(501, 1000, 300, 200)

    assert (caught.value.amount, caught.value.refundable) == (501, 500)


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
    waiting = await provider.authorize(100, "EUR", MethodRef("paypal", "paypal"), idempotency_key="o3")

    assert first == again and first.status is AuthStatus.AUTHORIZED and first.authorization_id
    assert declined.status is AuthStatus.DECLINED and declined.decline_code == "card_declined"
    assert waiting.status is AuthStatus.REQUIRES_ACTION and waiting.authorization_id


async def test_a_processing_error_is_retryable_and_not_remembered() -> None:
    provider = SimulatedProvider()
    method = MethodRef("card", PROCESSING_ERROR)

    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            await provider.authorize(100, "EUR", method, idempotency_key="o1")
        assert caught.value.code == "processing_error"


async def test_simulated_provider_refuses_moves_a_real_provider_refuses() -> None:
    provider = SimulatedProvider()
    auth = await provider.authorize(100, "EUR", MethodRef("card", "succeeds"), idempotency_key="o1")
    assert auth.authorization_id is not None

    await provider.capture(auth.authorization_id, 100)
    await provider.capture(auth.authorization_id, 100)  # a repeat is a no-op
    with pytest.raises(ProviderStateError) as caught:
        await provider.void(auth.authorization_id)
    await provider.refund(auth.authorization_id, 60, idempotency_key="r1")
    await provider.refund(auth.authorization_id, 60, idempotency_key="r1")  # the same refund again
    with pytest.raises(ProviderStateError):
        await provider.refund(auth.authorization_id, 41, idempotency_key="r2")  # 60 + 41 > 100
    await provider.refund(auth.authorization_id, 40, idempotency_key="r3")

    assert caught.value.state == "captured"


async def test_the_customer_step_is_answered_once() -> None:
    provider = SimulatedProvider()
    approved = await provider.authorize(100, "EUR", MethodRef("card", "requires_action"), idempotency_key="o1")
    denied = await provider.authorize(100, "EUR", MethodRef("paypal", "paypal"), idempotency_key="o2")
    assert approved.authorization_id is not None and denied.authorization_id is not None

    with pytest.raises(ProviderStateError):
        await provider.capture(approved.authorization_id, 100)  # not before the customer approved
    yes = await provider.confirm_action(approved.authorization_id, approved=True)
    again = await provider.confirm_action(approved.authorization_id, approved=True)
    no = await provider.confirm_action(denied.authorization_id, approved=False)
    with pytest.raises(ProviderStateError) as caught:
        await provider.confirm_action(denied.authorization_id, approved=True)

    assert yes == again and yes.status is AuthStatus.AUTHORIZED
    assert no.status is AuthStatus.DECLINED and no.decline_code == "authentication_failed"
    assert caught.value.state == "failed"
    await provider.capture(approved.authorization_id, 100)

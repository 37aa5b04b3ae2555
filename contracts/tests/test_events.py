"""The event contracts: wire names are explicit, unique and versioned; events survive the envelope round trip."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from microshop_contracts import (
    ALL_EVENTS,
    EVENT_TYPES,
    Envelope,
    OrderConfirmed,
    OrderLine,
    PaymentRefunded,
    UserRegistered,
    event_model,
)


def _order() -> OrderConfirmed:
    return OrderConfirmed(
        order_id="o-1",
        user_id="u-1",
        email="ada@example.com",
        name="Ada",
        lines=[OrderLine(sku="SKU-1", name="Mug", quantity=2, unit_price=1250)],
        total=2500,
        currency="EUR",
        shipping_address={"line1": "1 Main St", "city": "Paris", "country": "FR"},
    )


def test_an_event_survives_the_envelope_json_round_trip() -> None:
    event = _order()
    envelope = Envelope.wrap(event, source="orders", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")

    again = Envelope.model_validate_json(envelope.model_dump_json())

    assert again == envelope
    assert again.type == "order.confirmed.v1"
    assert again.event() == event


def test_every_wire_name_is_unique_and_ends_in_a_version() -> None:
    names = [event.TYPE for event in ALL_EVENTS]
    assert len(names) == len(set(names)) == len(EVENT_TYPES)
    for name in names:
        assert re.fullmatch(r"[a-z]+(\.[a-z_]+)+\.v[1-9][0-9]*", name), name
        assert name == EVENT_TYPES[name].TYPE


def test_consumers_ignore_fields_added_later() -> None:
    data = {"user_id": "u-1", "email": "a@example.com", "name": "Ada", "referrer": "newsletter"}
    assert UserRegistered.model_validate(data) == UserRegistered(user_id="u-1", email="a@example.com", name="Ada")


def test_money_is_integer_minor_units_with_an_iso_currency() -> None:
    with pytest.raises(ValidationError):
        PaymentRefunded(payment_id="p", order_id="o", amount=12.5, currency="EUR")
    with pytest.raises(ValidationError):
        PaymentRefunded(payment_id="p", order_id="o", amount=1250, currency="euro")


def test_data_that_breaks_the_contract_is_refused() -> None:
    envelope = Envelope(type="order.confirmed.v1", source="orders", data={"order_id": "o-1"})
    with pytest.raises(ValidationError):
        envelope.event()


def test_an_unknown_wire_name_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match=r"order\.shipped\.v9"):
        event_model("order.shipped.v9")

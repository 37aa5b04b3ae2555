"""Inventory rules and product pictures, without a database."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from microshop_products import domain
from microshop_products.domain import Line, Reservation, ReservationStatus
from microshop_products.images import category_colour, product_svg


def test_lines_are_sorted_by_sku_for_a_fixed_lock_order() -> None:
    lines = domain.normalise_lines([Line("MUG", 1), Line("BEANS", 2)])
    assert lines == (Line("BEANS", 2), Line("MUG", 1))


def test_a_sku_twice_is_refused() -> None:
    with pytest.raises(domain.DuplicateSku, match="BEANS"):
        domain.normalise_lines([Line("BEANS", 1), Line("MUG", 1), Line("BEANS", 2)])


def test_replay_answers_reserved_even_after_commit() -> None:
    lines = (Line("BEANS", 2),)
    existing = Reservation("o-1", ReservationStatus.COMMITTED, "2030-01-01T00:00:00.000000+00:00", lines)
    assert domain.replay(existing, lines) == Reservation("o-1", ReservationStatus.RESERVED, existing.expires_at, lines)


def test_replay_of_a_released_order_is_refused() -> None:
    existing = Reservation("o-1", ReservationStatus.RELEASED, "2030-01-01T00:00:00.000000+00:00", ())
    with pytest.raises(domain.ReservationReleased):
        domain.replay(existing, (Line("BEANS", 1),))


def test_replay_with_other_lines_is_refused() -> None:
    existing = Reservation("o-1", ReservationStatus.RESERVED, "2030-01-01T00:00:00.000000+00:00", (Line("A", 1),))
    with pytest.raises(domain.ReservationMismatch):
        domain.replay(existing, (Line("A", 2),))


@pytest.mark.parametrize(
    ("after", "taken", "threshold", "alert"),
    [(4, 1, 5, True), (4, 6, 5, True), (5, 1, 5, False), (3, 1, 5, False), (0, 10, 0, False)],
)
def test_stock_low_fires_once_when_crossing(after: int, taken: int, threshold: int, alert: bool) -> None:
    assert domain.crossed_low(after, taken, threshold) is alert


def test_timestamps_have_a_fixed_width_so_text_order_is_time_order() -> None:
    assert len(domain.timestamp()) == len("2026-01-01T00:00:00.000000+00:00")
    assert domain.expiry(1) > domain.timestamp()


def test_ids_are_stable_per_natural_key() -> None:
    assert domain.product_id("COF-001") == domain.product_id("COF-001") != domain.product_id("COF-002")
    assert domain.category_id("coffee") != domain.product_id("coffee")


def test_product_svg_is_valid_and_coloured_by_category() -> None:
    svg = product_svg("A very long product name that needs wrapping onto two lines", "tea", "Tea")
    root = ET.fromstring(svg)  # noqa: S314 - our own SVG
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert category_colour("tea") in svg
    assert category_colour("tea") == category_colour("tea")

"""The same end-to-end slice on real infrastructure: PostgreSQL with the system NATS, and with RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from microshop_launcher import Platform

from .conftest import Shop
from .test_checkout_e2e import checkout_slice, declined_slice

pytestmark = [pytest.mark.e2e, pytest.mark.infra]


def test_checkout_on_real_infrastructure(infra_platform: Platform, shop_for: Callable[[Platform], Shop]) -> None:
    checkout_slice(infra_platform, shop_for(infra_platform))


def test_declined_card_on_real_infrastructure(infra_platform: Platform, shop_for: Callable[[Platform], Shop]) -> None:
    declined_slice(shop_for(infra_platform))

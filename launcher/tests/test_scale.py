"""Several instances of a service: every caller is told every instance, and the CLI reads --scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microshop_launcher.cli import _scale, app
from microshop_launcher.platform import Platform, PlatformConfig, PlatformError


def test_every_caller_is_given_every_instance_even_before_it_starts(tmp_path: Path) -> None:
    platform = Platform(PlatformConfig.isolated(tmp_path, instances={"products": 3}))
    base = platform.port("products")
    expected = ",".join(f"http://127.0.0.1:{base + 100 * n}" for n in range(3))

    assert platform._service_env("gateway", 0)["GATEWAY_PRODUCTS_URL"] == expected
    assert platform._service_env("orders", 0)["ORDERS_PRODUCTS_URL"] == expected
    assert platform._service_env("orders", 0)["ORDERS_USERS_URL"] == platform.url("users")


def test_scaling_an_unknown_service_is_refused_before_anything_starts(tmp_path: Path) -> None:
    platform = Platform(PlatformConfig.isolated(tmp_path, instances={"inventory": 2}))
    with pytest.raises(PlatformError, match="inventory"):
        platform.start()
    assert platform.processes == {}


def test_scale_option_values() -> None:
    assert _scale(["products=2", "notifications=3"]) == {"products": 2, "notifications": 3}
    for bad in ("products", "products=0", "products=x", "inventory=2"):
        with pytest.raises(typer.BadParameter):
            _scale([bad])


def test_up_refuses_a_bad_scale_with_a_message() -> None:
    result = CliRunner().invoke(app, ["up", "--scale", "products=many"])
    assert result.exit_code != 0
    assert "SERVICE=N" in result.output

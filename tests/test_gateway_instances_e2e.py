"""The gateway in front of two real instances of one service: traffic shared, and one killed costs no request."""

from __future__ import annotations

import signal
import uuid

import httpx
import pytest

from microshop_launcher import Platform

pytestmark = pytest.mark.e2e


def _served(platform: Platform, instance: int, marker: str) -> int:
    """Requests carrying ``marker`` in the access log of one products instance."""
    log = platform.root / "logs" / f"products-{instance}.log"
    return sum(1 for line in log.read_text().splitlines() if marker in line and '"event":"request"' in line)


def _get(client: httpx.Client, tag: str) -> httpx.Response:
    return client.get("/api/v1/products", params={"limit": 3, "tag": tag}, headers={"X-Request-ID": tag})


def test_two_instances_share_the_traffic_and_losing_one_fails_no_read(platform: Platform) -> None:
    platform.start_instance("products")  # instance 1, on the base port + 100
    platform.restart("gateway")  # the gateway now balances over both
    platform.wait_ready(("gateway",))
    marker = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=platform.gateway_url, timeout=10) as client:
        # A distinct query string per request: the gateway's microcache must not answer any of them.
        # The request id (propagated by the gateway) marks the requests in each instance's access log.
        shared = [_get(client, f"{marker}-{n}") for n in range(40)]
        platform.kill("products", 1, signal.SIGKILL)
        after = [_get(client, f"{marker}-after-{n}") for n in range(60)]

    assert [r.status_code for r in shared] == [200] * 40
    assert _served(platform, 0, marker) >= 10 and _served(platform, 1, marker) >= 10, "both instances served"
    assert [r.status_code for r in after] == [200] * 60, "a GET that met the dead instance was retried on the other"

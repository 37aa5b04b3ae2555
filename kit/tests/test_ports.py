from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from microshop_kit import ports
from microshop_kit.ports import free_port


@pytest.fixture
def ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The kernel's ephemeral range as the module reads it, in a file the test writes."""
    path = tmp_path / "ip_local_port_range"
    path.write_text("32768\t60999\n")
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", path)
    yield path


def test_ports_come_from_below_the_ephemeral_range_and_are_never_handed_out_twice(ephemeral_range: Path) -> None:
    given = [free_port() for _ in range(200)]
    assert len(set(given)) == len(given)
    assert all(20000 <= port < 32768 for port in given)


def test_a_port_something_is_bound_to_is_passed_over(ephemeral_range: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with socket.socket() as released:
        released.bind(("127.0.0.1", 0))
        open_port = released.getsockname()[1]
    ephemeral_range.write_text("60000 60999")
    picks = iter([taken.getsockname()[1], open_port])
    monkeypatch.setattr(ports.random, "randrange", lambda low, high: next(picks))
    try:
        assert free_port() == open_port
    finally:
        taken.close()


def test_without_room_below_the_ephemeral_range_the_kernel_picks(ephemeral_range: Path) -> None:
    ephemeral_range.write_text("20500 60999")
    port = free_port()
    assert port >= 20500
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))

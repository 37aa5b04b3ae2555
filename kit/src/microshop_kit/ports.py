"""Free loopback ports for a process the caller will start later (test platforms, benchmarks, mail sinks).

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the same range it draws the source
ports of outgoing connections from: between picking such a port and the server binding it, any connection made on
the machine (a database pool, a broker client, another test's platform) can take it as its source port, and the
server's bind fails with EADDRINUSE. So ports are picked below that range, where the kernel never assigns source
ports, checked free by binding them, and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Lowest port picked: above the well-known and most registered servers' ports (PostgreSQL 5432, NATS 4222,
#: RabbitMQ 5672/15672, Redis 6379, the shop's own 8000-8010).
_LOWEST = 20000
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152  # IANA's dynamic range (macOS, Windows); Linux's default is 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing is bound to, outside the kernel's ephemeral range when there is room."""
    high = _ephemeral_low()
    with _lock:
        if high - _LOWEST >= 1000:
            for _ in range(200):
                port = random.randrange(_LOWEST, high)
                if port not in _given and _bindable(port):
                    _given.add(port)
                    return port
        while True:  # no room below the ephemeral range (or all taken): let the kernel pick
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port

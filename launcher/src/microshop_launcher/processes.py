"""One OS process of the platform, and the small socket helpers the launcher needs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from microshop_kit.ports import free_port

__all__ = ["LineSink", "Process", "free_port", "port_in_use", "ready"]

LineSink = Callable[[str, str], None]


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM to this child when the launcher dies, even by SIGKILL (Linux only), so
    no service is ever left running on its port without the launcher that owns it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Process:
    """One OS process of the platform, its output copied to a log file (and optionally to a console)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str | None
    sink: LineSink | None = None
    popen: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(  # noqa: S603 - fixed argv built by the platform
            self.args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # only calls prctl: safe between fork and exec
        )
        self._reader = threading.Thread(target=self._copy_output, name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        with self.log_path.open("ab") as log:
            for raw in self.popen.stdout:
                log.write(raw)
                log.flush()
                if self.sink is not None:
                    self.sink(self.name, raw.decode(errors="replace").rstrip())

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._reader is not None:
            self._reader.join(timeout=2)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(5)

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

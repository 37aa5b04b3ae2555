"""Where a checkout's CPU goes: the shop's processes sampled under bench/checkout.py's load, kind by kind.

Two runs of the SQLite checkout load (bench/checkout.py's own, concurrency 16, back to back, invariants and
emails checked after each). The first measures each
process's CPU per checkout with nothing attached. The second samples every Python process of the platform with
py-spy (``--nonblocking``, so the processes are never paused) over the measured window, and gives each busy
sample to a kind of work: the innermost frame of its stack that belongs to one of the kinds below decides (a
sample inside SQLite called from the saga is a database write; one in a Jinja template rendered by a consumer is
service code). Each process's CPU from the first run is then split by the shares of the second: milliseconds of
CPU per checkout by kind of work, for the whole machine. The broker (nats-server, Go) and the load generator are
not sampled and stand as rows of their own. Samples where the event loop waits are left out.

py-spy is not a dependency of the project (it attaches to other processes, as root or with ptrace allowed):
    python3 -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy
Run: .venv/bin/python bench/checkout_ledger.py --py-spy /tmp/spy/bin/py-spy [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from checkout import run

_SERVICES = tuple(f"microshop_{name}/" for name in ("orders", "payments", "products", "users", "notifications"))
_SERVICES += ("microshop_gateway/",)
_FRAMEWORK = ("starlette/", "fastapi/", "microshop_kit/app.py", "microshop_kit/lean.py", "microshop_kit/cache.py")
_FRAMEWORK += ("microshop_kit/auth.py", "microshop_kit/errors.py")
#: Kinds of work and the frames that belong to them (py-spy names a frame ``function (module/path.py:line)``).
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("structlog/", "access_log (", "(logging/")),
    ("metrics and trace context", ("prometheus_client/", "microshop_kit/context.py", "_Metrics.")),
    ("HTTP client (calls to other services, the gateway's hop)", ("microshop_kit/http.py", "microshop_kit/wire.py")),
    ("SQLite reads", ("SqliteDatabase.fetch (",)),
    ("SQLite writes", ("microshop_kit/db/sqlite.py", "Database.write (", "Database.execute (")),
    ("events (outbox relay, NATS client, consumer loop, envelopes)", ("nats/", "microshop_kit/bus/", "envelope.py")),
    ("SMTP client", ("aiosmtplib/",)),
    ("mail sink (SMTP server, Maildir)", ("aiosmtpd/", "microshop_launcher/mailsink.py", "(mailbox.py")),
    ("service code (handlers, saga, domain, models, templates)", (*_SERVICES, "microshop_contracts/", "jinja2/")),
    ("ASGI app layers (Starlette, FastAPI, the kit's middleware and lean routes)", _FRAMEWORK),
    ("HTTP server (uvicorn, granian: parsing, the answer's send)", ("uvicorn/", "granian/")),
]
OTHER = "other (asyncio, stdlib, pydantic and json outside the above)"
#: The loop waiting for work: py-spy in non-blocking mode cannot always tell an idle thread, these leaves can.
_IDLE_LEAVES = ("Runner.run (", "EpollSelector.select (", "BaseSelector.select (")
_LINE = re.compile(r":\d+\)")
_ENTRY = ("__main__.py", "<frozen runpy>")


def kind_of(frames: list[str]) -> str:
    """The kind of work of one sample: the innermost frame that belongs to a kind decides."""
    for frame in reversed(frames):
        for kind, marks in KINDS:
            if any(mark in frame for mark in marks):
                return kind
    return OTHER


def shares(profile: Path) -> dict[str, float]:
    """Share of a process's busy samples by kind of work, from a py-spy ``--format raw`` profile."""
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_LINE.sub(")", frame) for frame in stack.split(";") if not any(e in frame for e in _ENTRY)]
        if not frames or not frames[-1].strip() or frames[-1].startswith(_IDLE_LEAVES):
            continue
        counts[kind_of(frames)] += int(count)
    busy = sum(counts.values())
    return {kind: n / busy for kind, n in counts.most_common()} if busy else {}


class Sampler:
    """py-spy on each Python process of the platform, from the start of the measured window for ``seconds``."""

    def __init__(self, py_spy: str, folder: Path, seconds: float, rate: int) -> None:
        self.py_spy, self.folder, self.seconds, self.rate = py_spy, folder, seconds, rate
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            if name in ("nats", "load_generator"):  # Go, and this very process
                continue
            command = [self.py_spy, "record", "--pid", str(pid), "--duration", str(int(self.seconds))]
            command += ["--rate", str(self.rate), "--nonblocking", "--format", "raw"]
            command += ["--output", str(self.folder / f"{name}.txt")]
            self.running[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def profiles(self) -> dict[str, Path]:
        for process in self.running.values():
            process.wait(timeout=self.seconds + 60)
        return {name: self.folder / f"{name}.txt" for name in self.running if (self.folder / f"{name}.txt").exists()}


def ledger(cpu: dict[str, float], profiles: dict[str, dict[str, float]]) -> dict[str, float]:
    """CPU ms per checkout by kind of work over the whole machine."""
    by_kind: Counter[str] = Counter()
    for name, ms in cpu.items():
        split = profiles.get(name)
        if not split:  # not sampled (the broker, the load generator) or idle: a row of its own
            by_kind[f"{name} (not sampled)"] += ms
            continue
        for kind, share in split.items():
            by_kind[kind] += ms * share
    return {kind: round(ms, 2) for kind, ms in by_kind.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True, help="the py-spy executable")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second per process")
    args = parser.parse_args()
    plain = run("sqlite", args.seconds, args.concurrency, None, None)
    with tempfile.TemporaryDirectory() as folder:
        sampler = Sampler(args.py_spy, Path(folder), max(1.0, args.seconds - 1), args.rate)
        sampled = run("sqlite", args.seconds, args.concurrency, None, None, on_window=sampler.start)
        profiles = {name: shares(path) for name, path in sampler.profiles().items()}
    cpu = {k: v for k, v in plain["cpu_ms_per_checkout"].items() if k != "total"}
    cpu |= plain["cpu_ms_per_checkout_outside_the_shop"]
    by_kind = ledger(cpu, profiles)
    report = {
        "orders_per_s": plain["orders_per_s"],
        "place_order": plain["place_order"],
        "cpu_ms_per_checkout": {**cpu, "total": round(sum(cpu.values()), 2)},
        "by_kind_ms_per_checkout": by_kind,
        "by_process_share": {
            name: {kind: round(share, 3) for kind, share in split.items()} for name, split in profiles.items()
        },
        "sampled_run": {key: sampled[key] for key in ("orders_per_s", "cpu_ms_per_checkout")},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Start-up time and memory of the local platform (the `make up` machinery), on free ports.

Targets (issue 2): all services ready <= 10 s once installed; each service process <= 100 MB RSS.
Baseline in the same run: the start of a bare Python interpreter, so the ratio shows what the platform adds.
Run: .venv/bin/python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microshop_launcher import Platform, PlatformConfig


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def one_run() -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        platform = Platform(PlatformConfig.isolated(Path(folder)))
        started = time.perf_counter()
        try:
            platform.start(timeout=60)
            ready = time.perf_counter() - started
            time.sleep(1)
            memory = {name: round(rss_mb(procs[0].pid), 1) for name, procs in platform.processes.items()}
        finally:
            platform.stop()
    return ready, memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    baseline = statistics.median(bare_python() for _ in range(5))
    times, memories = [], []
    for _ in range(runs):
        ready, memory = one_run()
        times.append(ready)
        memories.append(memory)
    worst = {name: max(m[name] for m in memories) for name in memories[0]}
    result = {
        "ready_seconds": {"median": round(statistics.median(times), 2), "max": round(max(times), 2), "runs": runs},
        "bare_python_start_seconds": round(baseline, 3),
        "ratio_ready_to_bare_python": round(statistics.median(times) / baseline, 1),
        "service_rss_mb_max": worst,
        "targets": {"ready_seconds": 10, "service_rss_mb": 100},
        "met": max(times) <= 10 and max(worst.values()) <= 100,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

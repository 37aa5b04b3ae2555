"""A platform process's output: copied whole to its log file, and to the console sink line by line."""

from __future__ import annotations

import sys
from pathlib import Path

from microshop_launcher.processes import Process

# Writes lines in pieces (a line split across writes, several lines in one write, a last line without a newline).
SCRIPT = r"""
import os, time
for piece in (b"first ", b"line\nsecond line\nthird", b" line\n", b"caf\xc3\xa9 \xff\n", b"no newline at the end"):
    os.write(1, piece)
    time.sleep(0.05)
"""


def test_output_reaches_the_log_whole_and_the_sink_in_whole_lines(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    process = Process(
        "demo",
        [sys.executable, "-c", SCRIPT],
        env={},
        log_path=tmp_path / "demo.log",
        ready_url=None,
        sink=lambda name, line: seen.append((name, line)),
    )
    process.start()

    assert process.wait(10)
    assert (tmp_path / "demo.log").read_bytes() == (
        b"first line\nsecond line\nthird line\ncaf\xc3\xa9 \xff\nno newline at the end"
    )
    assert seen == [
        ("demo", "first line"),
        ("demo", "second line"),
        ("demo", "third line"),
        ("demo", "café \ufffd"),
        ("demo", "no newline at the end"),
    ]

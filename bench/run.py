"""Run every benchmark in this folder, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

SCRIPTS = (
    "db_read.py",
    "pg_tx.py",
    "internal_route.py",
    "auth.py",
    "startup.py",
    "catalog.py",
    "gateway.py",
    "storefront.py",
    "checkout.py",
    "notify.py",
)

if __name__ == "__main__":
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True)

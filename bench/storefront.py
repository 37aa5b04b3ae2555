"""Storefront pages through the gateway: home, search and product pages, req/s and p50/p99 each (issue 8).

Target, concurrency 16 on SQLite: p99 <= 100 ms and >= 500 pages/s for each page kind. Search pages rotate over
8 queries and product pages over 12 products, as a shop's visitors would; the gateway does not keep HTML pages
(they are not marked public), so every request renders a page in the storefront, which asks the catalog API
through the gateway (whose catalog answers the response caches may serve) unless its own client cache still
holds the answer (STOREFRONT_RESPONSE_CACHE_SECONDS, 1 s by default; the ``*_client_cache_off`` rows run with it
at 0). Baseline in the same run: the gateway's own /livez through the same load generator.
Run: .venv/bin/python bench/storefront.py [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
from loadgen import get_load, seeded_platform

SEARCHES = ["espresso", "cast+iron", "head", "tea+pot", "wireless", "coffee+beans", "stove", "notebook"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    report: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds}
    for label, env in (("", {}), ("_client_cache_off", {"STOREFRONT_RESPONSE_CACHE_SECONDS": "0"})):
        with seeded_platform(extra_env=env) as platform:
            base = platform.gateway_url
            items = httpx.get(f"{base}/api/v1/products", params={"limit": 12}, timeout=10).json()["items"]
            pages = {
                "livez_baseline": ["/livez"],
                "home": ["/"],
                "search": [f"/search?q={query}" for query in SEARCHES],
                "product": [f"/products/{item['id']}" for item in items],
            }
            for name, paths in pages.items():
                if label and name == "livez_baseline":
                    continue
                report[name + label] = get_load(base, paths, args.seconds, args.concurrency)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

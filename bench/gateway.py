"""What the gateway hop costs, side by side in one run: direct calls vs the gateway vs nginx as a keep-alive
reverse proxy, in front of the same upstream (issue 7).

Two upstreams: a hello-world ASGI app on granian (the proxy's own cost dominates), and the real products
service's catalog list (20 items, 12 pages rotating). The gateway runs with its response cache off
(GATEWAY_RESPONSE_CACHE_SECONDS=0) so every request crosses the hop, as through nginx (no proxy_cache), and with
its in-memory rate limiter counting every request (a budget it never reaches).
A third proxy shows the floor of Python here: bench/bare_proxy.py, a plain ASGI app on granian that only passes
requests through the kit's HTTP client (none of the gateway's checks, metrics or logs).
Targets: gateway >= 0.5 of direct on hello-world; >= 0.9 of direct on the catalog with <= 2 ms added at p50.
Needs wrk and nginx (`apt-get install -y wrk nginx`).
Run: .venv/bin/python bench/gateway.py [--seconds 10] [--concurrency 16] [--cases hello,catalog]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadgen import wrk

from microshop_kit.ports import free_port
from microshop_launcher import Platform, PlatformConfig

HERE = Path(__file__).parent
LISTINGS = [
    f"/api/v1/products?limit=20&sort={sort}&page={page}"
    for sort in ("name", "price", "-price", "newest")
    for page in (1, 2, 3)
]
HELLO = ["/api/v1/products/hello"]
UNREACHED = {"requests": 1_000_000_000, "seconds": 1}
LIMIT_CLASSES = ("default", "auth", "checkout")

NGINX_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
"""


def wait_live(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 - a loopback http URL built here
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, live: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=quiet, stderr=quiet)
    try:
        if live:
            wait_live(live)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def nginx(upstream_port: int) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as root:
        conf = Path(root) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, upstream=upstream_port, port=port))
        with process(["nginx", "-c", str(conf), "-g", "daemon off;"]):
            wait_live(f"http://127.0.0.1:{port}/livez")
            yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def gateway(products_url: str, root: Path) -> Iterator[str]:
    port = free_port()
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(root / "gateway"),
        "GATEWAY_PRODUCTS_URL": products_url,
        "GATEWAY_RESPONSE_CACHE_SECONDS": "0",
        "GATEWAY_LOG_JSON": "true",
        # Every request is counted against a per-address bucket (loopback is exempt by default), with a budget
        # far above the load: the limiter's cost is measured, it never refuses.
        "GATEWAY_RATE_LIMIT_EXEMPT_NETWORKS": "",
        "GATEWAY_RATE_LIMITS": json.dumps({name: {"per_address": UNREACHED} for name in LIMIT_CLASSES}),
    }
    with process([sys.executable, "-m", "microshop_gateway", "serve"], env, f"http://127.0.0.1:{port}/livez"):
        yield f"http://127.0.0.1:{port}"


def granian(target: str, port: int) -> list[str]:
    """The command serving an ASGI app of this folder (``module:app``) on granian, one worker, uvloop."""
    server = str(Path(sys.executable).parent / "granian")
    options = ["--interface", "asgi", "--loop", "uvloop", "--port", str(port), "--log-level", "warning"]
    return [server, *options, "--working-dir", str(HERE), target]


@contextlib.contextmanager
def bare_proxy(upstream: str) -> Iterator[str]:
    port = free_port()
    env = {"BARE_PROXY_UPSTREAM": upstream}
    with process(granian("bare_proxy:app", port), env, f"http://127.0.0.1:{port}/livez"):
        yield f"http://127.0.0.1:{port}"


def compare(direct: str, upstream_port: int, paths: list[str], root: Path, seconds: float, c: int) -> dict[str, Any]:
    result: dict[str, Any] = {"direct": wrk(direct, paths, seconds, c)}
    with gateway(direct, root) as url:
        result["gateway"] = wrk(url, paths, seconds, c)
    with nginx(upstream_port) as url:
        result["nginx"] = wrk(url, paths, seconds, c)
    with bare_proxy(direct) as url:
        result["bare_python_proxy"] = wrk(url, paths, seconds, c)
    base = result["direct"]
    for name in ("gateway", "nginx", "bare_python_proxy"):
        result[f"{name}_to_direct"] = round(result[name]["req_per_s"] / base["req_per_s"], 2)
        result[f"{name}_added_p50_ms"] = round(result[name]["p50_ms"] - base["p50_ms"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cases", default="hello,catalog", help="comma-separated: hello, catalog")
    args = parser.parse_args()
    cases = {case.strip() for case in args.cases.split(",") if case.strip()}
    unknown = cases - {"hello", "catalog"}
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}; use hello, catalog")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install -y {tool}")
    report: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "hello" in cases:
            report["hello_world"] = hello_world(root, args.seconds, args.concurrency)
            print(json.dumps({"hello_world": report["hello_world"]}), file=sys.stderr)
        if "catalog" in cases:
            report["catalog_list"] = catalog_list(root, args.seconds, args.concurrency)
    print(json.dumps(report, indent=2))


def hello_world(root: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    port = free_port()
    with process(granian("hello_upstream:app", port), live=f"http://127.0.0.1:{port}/livez"):
        return compare(f"http://127.0.0.1:{port}", port, HELLO, root, seconds, concurrency)


def catalog_list(root: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    no_cache = {"PRODUCTS_RESPONSE_CACHE_SECONDS": "0"}
    platform = Platform(PlatformConfig.isolated(root / "platform", extra_env=no_cache))
    try:
        # Only what the catalog needs: the broker and one products process.
        platform.start_broker()
        platform.start_instance("products")
        platform.run_cli("products", "seed")
        products = platform.url("products")
        return compare(products, platform.port("products"), LISTINGS, root, seconds, concurrency)
    finally:
        platform.stop()


if __name__ == "__main__":
    main()

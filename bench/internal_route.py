"""What FastAPI's per-request work costs on an internal call, and what the kit's lean routes leave of it:
products' two internal checkout calls served three ways in one app, same process, same database.

- ``fastapi``: the real routes handled by FastAPI itself (``LeanRoute.lean`` off: what every route costs);
- ``lean``: the real routes as the service serves them (``microshop_kit.lean``: the same validation, handler and
  response model, without FastAPI's per-request machinery);
- ``plain`` (the baseline): the same work as a plain ASGI route by hand: parse the SKUs or validate the JSON body
  with the same pydantic model, call the same handler, serialize the same response model.
All three go through every middleware the service has (the kit's request id, trace, metrics and access log, the
response cache, FastAPI's outer layers) and the router. Reported: CPU per request of each (alternating rounds,
median) and the ratios against the plain route. A checkout makes eight requests to lean routes: products 4, users
1, payments 1 (internal) and orders 2 (the cart and the order).
With ``--gap-ms 5`` the process sleeps 5 ms before each request (only the requests are timed): the cost of a
request to a service that is not kept busy, as each of the shop's services is at ~200 checkouts/s.
Run: .venv/bin/python bench/internal_route.py [--requests 3000] [--rounds 3] [--gap-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from microshop_kit.testing import running_app, served_by_fastapi
from microshop_products import ProductsSettings, create_app
from microshop_products.api import InternalProductOut, InternalProductsOut, LineOut, ReservationIn, ReservationOut
from microshop_products.domain import Line
from microshop_products.seed import seed_catalog

SKU = "COF-003"
_JSON = [(b"content-type", b"application/json")]


def plain_routes(app: FastAPI) -> list[Route]:
    """The two internal calls of the checkout, as plain ASGI apps doing the same work as the real routes."""

    async def answer(send: Send, status: int, body: bytes) -> None:
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def products(scope: Scope, receive: Receive, send: Send) -> None:
        skus = [value for key, value in parse_qsl(scope["query_string"].decode()) if key == "sku"]
        rows = await app.state.catalog.by_skus(skus)
        out = InternalProductsOut(items=[InternalProductOut.model_validate(dict(row)) for row in rows])
        await answer(send, 200, out.model_dump_json().encode())

    async def reserve(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        wanted = ReservationIn.model_validate_json(body)
        done = await app.state.inventory.reserve(wanted.order_id, [Line(x.sku, x.quantity) for x in wanted.lines])
        out = ReservationOut(
            order_id=done.order_id,
            status=done.status,
            expires_at=done.expires_at,
            lines=[LineOut(sku=line.sku, quantity=line.quantity) for line in done.lines],
        )
        await answer(send, 201, out.model_dump_json().encode())

    return [
        Route("/plain/v1/products", _Asgi(products), methods=["GET"]),
        Route("/plain/v1/reservations", _Asgi(reserve), methods=["POST"]),
    ]


class _Asgi:
    """Starlette serves a function as a request handler; an object with ``__call__`` as an ASGI app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def call(app: FastAPI, method: str, path: str, query: bytes = b"", body: bytes = b"") -> int:
    """One request straight into the ASGI app (no server, no socket): what the service's own code costs."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"products"), *_JSON, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8002),
        "state": {},
    }
    received = False
    status = 0

    async def receive() -> Message:
        nonlocal received
        if received:
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def requests(app: FastAPI, prefix: str) -> dict[str, Callable[[], Awaitable[int]]]:
    def reservation() -> Awaitable[int]:
        body = {"order_id": str(uuid.uuid4()), "lines": [{"sku": SKU, "quantity": 1}]}
        return call(app, "POST", f"{prefix}/reservations", body=json.dumps(body).encode())

    return {
        "product lookup (GET, query)": lambda: call(app, "GET", f"{prefix}/products", query=f"sku={SKU}".encode()),
        "reservation (POST, JSON body)": reservation,
    }


async def cpu_per_request(send: Callable[[], Awaitable[int]], count: int, gap: float = 0.0) -> float:
    """CPU per request, back to back, or with the process asleep ``gap`` seconds before each (only the requests
    counted): what a request costs a service that is not kept busy, whose code path is no longer hot."""
    if not gap:
        started = time.process_time()
        for _ in range(count):
            status = await send()
            assert status in (200, 201), status
        return (time.process_time() - started) / count * 1e6
    spent = 0.0
    for _ in range(count):
        await asyncio.sleep(gap)  # the loop waits, the process sleeps
        started = time.process_time()
        status = await send()
        spent += time.process_time() - started
        assert status in (200, 201), status
    return spent / count * 1e6


async def measure(count: int, rounds: int, gap: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        settings = ProductsSettings(data_dir=Path(folder), broker_url=None)
        app = create_app(settings)
        app.router.routes[:0] = plain_routes(app)
        async with running_app(app):
            db = app.state.kit.database
            await seed_catalog(db)
            await db.execute(
                "UPDATE stock SET on_hand = on_hand + :n, received = received + :n WHERE sku = :sku",
                {"n": 10 * count * rounds, "sku": SKU},
            )
            routes, plain = requests(app, "/internal/v1"), requests(app, "/plain/v1")
            results: dict[str, Any] = {}
            for name in routes:
                ways = {"fastapi": routes[name], "lean": routes[name], "plain": plain[name]}
                taken: dict[str, list[float]] = {way: [] for way in ways}
                for round_ in range(rounds + 1):  # the first round warms all three up
                    for way, send in ways.items():
                        with served_by_fastapi() if way == "fastapi" else contextlib.nullcontext():
                            cpu = await cpu_per_request(send, count if round_ else 200, gap if round_ else 0.0)
                        if round_:
                            taken[way].append(cpu)
                us = {way: statistics.median(values) for way, values in taken.items()}
                results[name] = {
                    **{f"{way}_us": round(value) for way, value in us.items()},
                    "fastapi_against_plain": round(us["fastapi"] / us["plain"], 2),
                    "lean_against_plain": round(us["lean"] / us["plain"], 2),
                }
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="sleep this long before each request (a service that is not busy)"
    )
    args = parser.parse_args()
    # The access log of every request goes to stderr; a terminal or a pipe there would be measured too.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        results = asyncio.run(measure(args.requests, args.rounds, args.gap_ms / 1000))
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

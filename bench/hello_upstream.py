"""A hello-world upstream for bench/gateway.py: the cheapest possible ASGI answer, a JSON body of ~1 kB."""

from __future__ import annotations

from typing import Any

BODY = b'{"items":[' + b",".join([b'{"id":"p-1","name":"Something nice","price":1999}'] * 20) + b"]}"
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

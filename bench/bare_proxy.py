"""The floor of any Python proxy here, for bench/gateway.py: a plain ASGI app on granian that sends each request
to one upstream over the kit's HTTP client and passes the answer back, with none of the gateway's work (no route
table, limits, tokens, breaker, header rules, metrics or logs). Whatever the gateway costs above it is its own.
Run by bench/gateway.py: ``granian --interface asgi bare_proxy:app`` with ``BARE_PROXY_UPSTREAM`` set.
"""

from __future__ import annotations

import os
from typing import Any

from microshop_kit.wire import InstancePool

_pool: InstancePool | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = InstancePool(os.environ["BARE_PROXY_UPSTREAM"])
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _pool is not None
    # The benchmark's requests are GETs without a body: like the gateway, nothing is asked of receive.
    query = scope["query_string"]
    target = scope["raw_path"] + b"?" + query if query else scope["raw_path"]
    answer = await _pool.request(scope["method"].encode(), target, [], b"", limit=10_485_760)
    headers = [(name.lower(), value) for name, value in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})

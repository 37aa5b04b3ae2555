"""The gateway's readiness: each upstream service answers 200 on /readyz on at least one instance."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from microshop_kit.app import Kit
from microshop_kit.context import outgoing_headers
from microshop_kit.errors import UpstreamUnavailable

ReadyCheck = Callable[[Kit], Awaitable[str | None]]


async def _probe(kit: Kit, base: str, limit: float) -> str:
    """``"ok"`` or why the instance is not ready."""
    try:
        async with kit.http.session().get(
            f"{base}/readyz",
            headers=outgoing_headers(),
            timeout=aiohttp.ClientTimeout(total=limit),
            allow_redirects=False,
        ) as response:
            return "ok" if response.status == 200 else f"{base} answered {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{base} unreachable ({type(exc).__name__})"


def upstream_check(service: str, urls: Sequence[str], timeout: float) -> ReadyCheck:
    """A ready check named after the service (its key in the /readyz report)."""

    async def check(kit: Kit) -> str:
        results = await asyncio.gather(*(_probe(kit, url, timeout) for url in urls))
        ready = sum(result == "ok" for result in results)
        if ready == 0:
            raise UpstreamUnavailable(service, "; ".join(results))
        if ready < len(results):
            return f"degraded: {ready}/{len(results)} instances ready"
        return "ok"

    check.__name__ = service
    check.__qualname__ = f"upstream_check.{service}"
    return check

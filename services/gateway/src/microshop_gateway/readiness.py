"""Readiness of the upstreams: a background loop probes every instance's /readyz and takes an instance that
fails out of the rotation (back in once it passes); the gateway's own /readyz reports what the loop saw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from microshop_gateway.proxy import Upstream
from microshop_kit.http import HttpPool
from microshop_kit.log import get_logger

log = get_logger("microshop.gateway.readiness")


@dataclass
class Probe:
    """The last readiness probe of one instance."""

    ready: bool
    detail: str
    checked_at: float


async def probe(session: aiohttp.ClientSession, base: str, limit: float) -> Probe:
    """Ask one instance's /readyz; ``detail`` says why it is not ready."""
    try:
        async with session.get(
            f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False
        ) as response:
            await response.read()
            ready = response.status == 200
            detail = "ok" if ready else f"{base} answered {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        ready, detail = False, f"{base} unreachable ({type(exc).__name__})"
    return Probe(ready, detail, time.time())


class Readiness:
    """Probes every instance of every upstream and keeps the balancers' rotations in step."""

    def __init__(self, upstreams: Mapping[str, Upstream], http: HttpPool, *, interval: float, timeout: float) -> None:
        self.upstreams = upstreams
        self.http = http
        self.interval = interval
        self.timeout = timeout
        self.probes: dict[str, dict[str, Probe]] = {name: {} for name in upstreams}

    async def probe_all(self) -> None:
        """One round: every instance at once, each bounded by the probe timeout."""
        session = self.http.session()
        pairs = [(upstream, url) for upstream in self.upstreams.values() for url in upstream.balancer.urls]
        results = await asyncio.gather(*(probe(session, url, self.timeout) for _, url in pairs))
        for (upstream, url), result in zip(pairs, results, strict=True):
            self.probes[upstream.name][url] = result
            if upstream.balancer.set_ready(url, result.ready):
                if result.ready:
                    log.info("instance back in rotation", service=upstream.name, instance=url)
                else:
                    log.warning("instance out of rotation", service=upstream.name, instance=url, reason=result.detail)

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.probe_all()

    def service_state(self, name: str) -> str:
        """``ok``, ``degraded: k/n instances ready`` or ``unavailable: <why>`` (the kit's /readyz wording)."""
        upstream = self.upstreams[name]
        probes = self.probes[name]
        ready = [url for url in upstream.balancer.urls if upstream.balancer.is_ready(url)]
        if not ready:
            why = "; ".join(probes[url].detail for url in upstream.balancer.urls if url in probes)
            return f"unavailable: {why or 'not probed yet'}"
        if len(ready) < len(upstream.balancer.urls):
            return f"degraded: {len(ready)}/{len(upstream.balancer.urls)} instances ready"
        return "ok"

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether the gateway is ready, and the /readyz body: a ``checks`` line per service (as every
        service's /readyz has) and per upstream its circuit and each instance's last probe.

        One service down does not make the gateway unready: it still serves every other route, and answers that
        service's routes with a fast 503 problem, which is its job. A readiness probe on the gateway would
        otherwise take the shop's only door out of service for one service's outage, and stall a rollout of the
        gateway until that service is back. Only a gateway that reaches no upstream at all (a network policy
        or address wrong for this pod) is unready: ``degraded`` says some are down, ``unavailable`` all."""
        checks = {name: self.service_state(name) for name in self.upstreams}
        upstreams: dict[str, Any] = {}
        for name, upstream in self.upstreams.items():
            instances = []
            for url in upstream.balancer.urls:
                last = self.probes[name].get(url)
                instances.append(
                    {
                        "url": url,
                        "in_rotation": upstream.balancer.is_ready(url),
                        "detail": last.detail if last else "not probed yet",
                        "checked_at": last.checked_at if last else None,
                    }
                )
            upstreams[name] = {
                "state": checks[name].split(":")[0],
                "circuit": upstream.breaker.state,
                "instances": instances,
            }
        ready = not checks or any(not state.startswith("unavailable") for state in checks.values())
        status = "unavailable" if not ready else "ready" if all(s == "ok" for s in checks.values()) else "degraded"
        return ready, {"status": status, "checks": checks, "upstreams": upstreams}

"""Rate limits: token buckets per client address and per account, kept in memory or shared through Redis.

Each key holds one number, the bucket's theoretical arrival time (GCRA, ``domain.gcra``): a token bucket that
needs no refill timer and gives an exact ``Retry-After``. In memory the buckets are per process; with a Redis URL
every gateway process checks and updates the same keys in one Lua script (atomic, one round trip, Redis's own
clock), so several replicas enforce one budget. When Redis cannot be reached a request is let through and a
warning is logged (at most every ``_WARN_EVERY`` seconds): a Redis outage must not take the shop down.
The Lua script reads Redis's clock (``TIME``), so gateway hosts whose clocks differ still share one budget.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from microshop_gateway.domain import gcra
from microshop_gateway.settings import Budget, RateLimitClass
from microshop_kit.log import get_logger

log = get_logger("microshop.gateway.limits")

Scope = Literal["address", "account"]
#: Seconds between two "Redis unreachable" warnings, and between two attempts to reach it again.
_WARN_EVERY = 10.0
_RETRY_REDIS_AFTER = 1.0
_MAX_ADDRESSES = 65_536


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request over budget: which budget, and how long until one more request fits."""

    scope: Scope
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class Store(Protocol):
    async def hit(self, key: str, budget: Budget) -> float | None:
        """Count one request against ``key``; when it is over budget count nothing and return the seconds
        until one more request fits."""

    async def close(self) -> None: ...


class MemoryStore:
    """Buckets in this process. Expired keys are swept once the table passes ``max_keys``."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._tats: dict[str, float] = {}

    async def hit(self, key: str, budget: Budget) -> float | None:
        now = self._clock()
        new_tat, wait = gcra(self._tats.get(key), now, budget.interval, budget.capacity)
        if wait > 0:
            return wait
        self._tats[key] = new_tat
        if len(self._tats) > self.max_keys:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        # A key whose arrival time has passed is a full bucket: forgetting it changes nothing.
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        while len(self._tats) > self.max_keys:  # still too many live keys: drop the oldest inserted
            del self._tats[next(iter(self._tats))]

    async def close(self) -> None:
        self._tats.clear()


# KEYS[1]: the bucket. ARGV: the interval and capacity * interval, in microseconds.
# Returns 0 when allowed (the bucket updated), else the wait in microseconds. Redis's clock, not the callers'.
_GCRA_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local wait = new_tat - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"""


class RedisStore:
    """Buckets in Redis, shared by every gateway process that uses the same URL and key prefix."""

    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self._client: Any = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script: Any = self._client.register_script(_GCRA_LUA)
        self._down_until = 0.0
        self._warned_at = -_WARN_EVERY

    async def hit(self, key: str, budget: Budget) -> float | None:
        from redis.exceptions import RedisError

        now = time.monotonic()
        if now < self._down_until:
            return None  # failed a moment ago: do not make every request wait for the timeout again
        interval = round(budget.interval * 1_000_000)
        try:
            wait = await self._script(keys=[self.prefix + key], args=[interval, interval * budget.capacity])
        except (RedisError, OSError, TimeoutError) as exc:
            self._unreachable(now, exc)
            return None
        return int(wait) / 1_000_000 if wait else None

    def _unreachable(self, now: float, exc: BaseException) -> None:
        self._down_until = now + _RETRY_REDIS_AFTER
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("rate limits not enforced: redis unreachable", redis=self.url, error=repr(exc))

    async def close(self) -> None:
        await self._client.aclose()


def address_key(host: str, exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str | None:
    """The budget key of a client address (None when exempt); an IPv6 client counts per /64, the block one
    subscriber usually gets, so it cannot dodge its budget by changing the low bits."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a Unix socket peer): its own key
    if any(address in network for network in exempt):
        return None
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


class RateLimiter:
    """Checks a request's budgets of its route's class; the store decides where the buckets live."""

    def __init__(self, classes: dict[str, RateLimitClass], store: Store, exempt: Iterable[str] = ()) -> None:
        self.classes = classes
        self.store = store
        self.exempt = tuple(ipaddress.ip_network(network, strict=False) for network in exempt)
        #: Keys by client address, so the address is parsed once per client, not per request.
        self._keys: dict[str, str | None] = {}

    async def check_address(self, limit_class: str, host: str | None) -> Refusal | None:
        budget = self.classes[limit_class].per_address
        if budget is None or host is None:
            return None
        try:
            key = self._keys[host]
        except KeyError:
            if len(self._keys) >= _MAX_ADDRESSES:
                self._keys.clear()
            key = self._keys[host] = address_key(host, self.exempt)
        if key is None:
            return None
        wait = await self.store.hit(f"{limit_class}:a:{key}", budget)
        return None if wait is None else Refusal("address", wait)

    async def check_account(self, limit_class: str, user_id: str) -> Refusal | None:
        budget = self.classes[limit_class].per_account
        if budget is None:
            return None
        wait = await self.store.hit(f"{limit_class}:u:{user_id}", budget)
        return None if wait is None else Refusal("account", wait)

    async def close(self) -> None:
        await self.store.close()

"""Idempotency-Key semantics for every mutation: replay the first answer, refuse reuse, wait out duplicates.

A request claims its key (scoped per route, and per user or order) by inserting it as in flight; the answer is
stored when the work returns it. A duplicate arriving meanwhile waits a short while for that answer (so ten
identical requests at once get ten identical replies), then gets KeyInFlight. The work raising (a retryable
failure, a crash) releases the key, so a retry runs it again; that is safe because every step underneath is
idempotent. A key whose holder died is taken over after its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from microshop_kit.log import get_logger
from microshop_payments.domain import KeyInFlight, KeyReused, request_hash
from microshop_payments.settings import PaymentsSettings
from microshop_payments.store import PaymentStore, StoredAnswer

log = get_logger("microshop.payments")

#: How often a duplicate re-reads a key another process holds (one of this process is awaited directly).
POLL_SECONDS = 0.05


class Idempotency:
    def __init__(self, store: PaymentStore, settings: PaymentsSettings) -> None:
        self.store = store
        self.settings = settings
        #: Keys this process is running now, set when their answer is stored (or they are released).
        self._running: dict[str, asyncio.Event] = {}

    async def run(
        self, key: str, scope: str, payload: Mapping[str, Any], work: Callable[[], Awaitable[StoredAnswer]]
    ) -> StoredAnswer:
        """The stored answer of ``key`` within ``scope``, or ``work``'s answer (stored) when the key is new."""
        stored_key = f"{scope}|{key}"
        replay = await self._claim(stored_key, request_hash(scope, payload), key)
        if replay is not None:
            return replay
        done = self._running.setdefault(stored_key, asyncio.Event())
        try:
            answer = await work()
            await self.store.finish_key(stored_key, answer)
        except BaseException:
            await self.store.release_key(stored_key)
            raise
        finally:
            self._running.pop(stored_key, None)
            done.set()
        return answer

    async def _claim(self, stored_key: str, fingerprint: str, key: str) -> StoredAnswer | None:
        """Take the key (None), or the stored answer; KeyReused / KeyInFlight when it can't be taken."""
        deadline = asyncio.get_running_loop().time() + self.settings.idempotency_wait_seconds
        while True:
            at = datetime.now(UTC)
            async with self.store.db.transaction() as tx:
                record = await self.store.claim_key(tx, stored_key, fingerprint, at.isoformat())
                if record is None:
                    return None
                if record["request_hash"] != fingerprint:
                    raise KeyReused(key)
                if record["state"] == "done":
                    body: dict[str, Any] = json.loads(record["response_body"])
                    return StoredAnswer(int(record["status_code"]), body, replayed=True)
                lease = timedelta(seconds=self.settings.idempotency_lease_seconds)
                if datetime.fromisoformat(record["locked_at"]) <= at - lease:
                    log.warning("taking over an abandoned idempotency key", key=key)
                    await self.store.relock_key(tx, stored_key, at.isoformat())
                    return None
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise KeyInFlight(key)
            await self._wait(stored_key, min(remaining, POLL_SECONDS))

    async def _wait(self, stored_key: str, seconds: float) -> None:
        """Until this process finishes the key, or ``seconds`` (another process's key is polled)."""
        running = self._running.get(stored_key)
        if running is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await running.wait()

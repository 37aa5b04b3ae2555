"""Password hashing with argon2id (OWASP parameters), off the event loop and bounded in concurrency."""

from __future__ import annotations

import asyncio
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: OWASP Password Storage Cheat Sheet: argon2id, m >= 19 MiB, t = 2, p = 1.
TIME_COST = 2
PARALLELISM = 1
MIN_MEMORY_COST_KIB = 19_456


class PasswordHasher:
    """Hashes and verifies passwords.

    One hash costs ~50 ms of CPU and ``memory_cost`` KiB of RAM. It runs in a worker thread (argon2-cffi
    releases the GIL, so the loop keeps serving; one thread hop is noise next to 50 ms), and a semaphore
    caps how many run at once so a burst of sign-ins cannot exhaust memory.
    """

    def __init__(self, *, memory_cost: int = MIN_MEMORY_COST_KIB, concurrency: int = 4) -> None:
        if memory_cost < MIN_MEMORY_COST_KIB:
            raise ValueError(f"memory_cost {memory_cost} KiB is below OWASP's {MIN_MEMORY_COST_KIB} KiB")
        self._argon2 = argon2.PasswordHasher(
            time_cost=TIME_COST, memory_cost=memory_cost, parallelism=PARALLELISM, type=argon2.Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency)
        # Verified against when the email is unknown, so that answer takes as long as a wrong password.
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._argon2.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``; with None, spends the same time and says False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            self._argon2.verify(stored_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when a hash was made with other parameters (e.g. before a cost increase)."""
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

"""SMS through a provider adapter; the simulated provider of the local run appends each text to a JSON-lines file."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from microshop_notifications.domain import SendFailure, is_e164
from microshop_notifications.store import Claimed

#: Twilio's test number for "this is not a valid phone number": the simulated provider refuses it for good.
INVALID_NUMBER = "+15005550001"
#: A number the simulated provider answers "try again later" for, the way a provider under load does.
BUSY_NUMBER = "+15005550003"


class SmsProvider(Protocol):
    """The seam for a real provider (Twilio, Vonage, ...): send one text or raise SendFailure, saying whether
    trying again can help. ``reference`` is the same for every attempt of one message (an idempotency key
    where the provider supports one)."""

    async def send(self, *, to: str, sender: str, text: str, reference: str) -> None: ...


class SimulatedSmsProvider:
    """Accepts every valid E.164 number and records the text in ``path`` (one JSON object a line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def send(self, *, to: str, sender: str, text: str, reference: str) -> None:
        if not is_e164(to) or to == INVALID_NUMBER:
            raise SendFailure(f"21211 invalid 'To' phone number {to!r}", permanent=True)
        if to == BUSY_NUMBER:
            raise SendFailure("20429 too many requests", permanent=False)
        line = json.dumps(
            {"to": to, "from": sender, "text": text, "reference": reference, "at": datetime.now(UTC).isoformat()}
        )
        async with self._lock:  # a short local append; one writer at a time keeps lines whole
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")

    def sent(self) -> list[dict[str, str]]:
        """Every text recorded so far, oldest first (for the local run and tests)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


class SmsTransport:
    """The sender's SMS channel: hands a claimed message to the configured provider."""

    def __init__(self, provider: SmsProvider, sender: str) -> None:
        self.provider = provider
        self.sender = sender

    async def send(self, message: Claimed) -> None:
        await self.provider.send(to=message.recipient, sender=self.sender, text=message.text, reference=message.id)

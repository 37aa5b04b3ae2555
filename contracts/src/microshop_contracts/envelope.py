"""The envelope every event travels in (CloudEvents-like): identity, wire name, origin, time, trace, data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from microshop_contracts.events import Event, event_model


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One event on the wire. ``id`` is also the broker's dedup id and the consumers' inbox key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(default_factory=_new_id, min_length=1)
    type: str = Field(min_length=1)
    source: str = Field(min_length=1)
    time: datetime = Field(default_factory=_now)
    traceparent: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(cls, event: Event, *, source: str, traceparent: str | None = None) -> Envelope:
        """The envelope for one event instance, named by the event's wire name."""
        return cls(type=event.TYPE, source=source, traceparent=traceparent, data=event.model_dump(mode="json"))

    def event(self) -> Event:
        """``data`` validated against the contract for ``type``.

        Raises KeyError for an unknown type and pydantic.ValidationError for data that breaks the contract.
        """
        return event_model(self.type).model_validate(self.data)

"""Consumers of order and user events: each records the one email its event asks for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from microshop_contracts import Envelope, OrderConfirmed, OrderRejected, UserRegistered
from microshop_kit.db import Tx
from microshop_notifications.domain import Email
from microshop_notifications.handlers import Recorder
from microshop_notifications.render import Renderer

Handler = Callable[[Tx, Envelope], Awaitable[None]]


class Consumers:
    """Validates each event with its contract, renders the email and records it in the inbox transaction.

    An event that fails validation raises: the bus redelivers it and dead-letters it after its bounded
    tries, so a malformed event is never silently acknowledged.
    """

    def __init__(self, renderer: Renderer, recorder: Recorder) -> None:
        self.renderer = renderer
        self.recorder = recorder

    def handlers(self) -> Mapping[str, Handler]:
        return {
            OrderConfirmed.TYPE: self.on_order_confirmed,
            OrderRejected.TYPE: self.on_order_rejected,
            UserRegistered.TYPE: self.on_user_registered,
        }

    async def on_order_confirmed(self, tx: Tx, event: Envelope) -> None:
        data = OrderConfirmed.model_validate(event.data)
        await self._record(tx, event, self.renderer.order_confirmed(data), data.user_id)

    async def on_order_rejected(self, tx: Tx, event: Envelope) -> None:
        data = OrderRejected.model_validate(event.data)
        await self._record(tx, event, self.renderer.order_rejected(data), data.user_id)

    async def on_user_registered(self, tx: Tx, event: Envelope) -> None:
        data = UserRegistered.model_validate(event.data)
        await self._record(tx, event, self.renderer.welcome(data), data.user_id)

    async def _record(self, tx: Tx, event: Envelope, email: Email, user_id: str) -> None:
        await self.recorder.record(tx, event_id=event.id, event_type=event.type, email=email, user_id=user_id)

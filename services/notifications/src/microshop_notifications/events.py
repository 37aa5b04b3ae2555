"""Consumers of order, payment and user events: each records the messages its event asks for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from microshop_contracts import (
    Envelope,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderRejected,
    OrderShipped,
    PaymentRefunded,
    UserContactChanged,
    UserDeleted,
    UserRegistered,
)
from microshop_kit.db import Tx
from microshop_notifications.domain import Contact
from microshop_notifications.handlers import Recorder
from microshop_notifications.recipients import Recipients
from microshop_notifications.render import Notice, Renderer

Handler = Callable[[Tx, Envelope], Awaitable[None]]


class Consumers:
    """Validates each event with its contract, renders its messages and records them in the inbox transaction.

    Every customer event gets an email; order and payment events also get a text when the read model knows a
    phone number with the SMS opt-in. An event that fails validation raises: the bus redelivers it and
    dead-letters it after its bounded tries, so a malformed event is never silently acknowledged.
    """

    def __init__(self, renderer: Renderer, recorder: Recorder) -> None:
        self.renderer = renderer
        self.recorder = recorder

    def handlers(self) -> Mapping[str, Handler]:
        return {
            OrderConfirmed.TYPE: self.on_order_confirmed,
            OrderRejected.TYPE: self.on_order_rejected,
            OrderCancelled.TYPE: self.on_order_cancelled,
            OrderShipped.TYPE: self.on_order_shipped,
            OrderDelivered.TYPE: self.on_order_delivered,
            PaymentRefunded.TYPE: self.on_payment_refunded,
            UserRegistered.TYPE: self.on_user_registered,
            UserDeleted.TYPE: self.on_user_deleted,
            UserContactChanged.TYPE: self.on_contact_changed,
        }

    async def on_order_confirmed(self, tx: Tx, event: Envelope) -> None:
        data = OrderConfirmed.model_validate(event.data)
        await self._order_update(tx, event, self.renderer.order_confirmed(data), data.user_id, data.email)

    async def on_order_rejected(self, tx: Tx, event: Envelope) -> None:
        data = OrderRejected.model_validate(event.data)
        await self._order_update(tx, event, self.renderer.order_rejected(data), data.user_id, data.email)

    async def on_order_cancelled(self, tx: Tx, event: Envelope) -> None:
        data = OrderCancelled.model_validate(event.data)
        await self._order_update(tx, event, self.renderer.order_cancelled(data), data.user_id, data.email)

    async def on_order_shipped(self, tx: Tx, event: Envelope) -> None:
        data = OrderShipped.model_validate(event.data)
        await self._order_update(tx, event, self.renderer.order_shipped(data), data.user_id, data.email)

    async def on_order_delivered(self, tx: Tx, event: Envelope) -> None:
        data = OrderDelivered.model_validate(event.data)
        await self._order_update(tx, event, self.renderer.order_delivered(data), data.user_id, data.email)

    async def on_payment_refunded(self, tx: Tx, event: Envelope) -> None:
        """The event names only the user: the address comes from the read model, else the sender looks it up."""
        data = PaymentRefunded.model_validate(event.data)
        contact = await Recipients.get(tx, data.user_id) if data.user_id else None
        if contact is not None and contact.deleted:
            return  # the account is erased: nobody to tell
        notice = self.renderer.payment_refunded(data, contact.name if contact else "")
        email = self.renderer.email(notice, contact.email if contact else "")
        await self.recorder.record(
            tx,
            event_id=event.id,
            event_type=event.type,
            message=email,
            user_id=data.user_id,
            address_later=data.user_id is not None and not email.recipient,
        )
        await self._sms(tx, event, notice, contact)

    async def on_user_registered(self, tx: Tx, event: Envelope) -> None:
        data = UserRegistered.model_validate(event.data)
        if not await Recipients.registered(tx, user_id=data.user_id, email=data.email, name=data.name):
            return  # the account was deleted before this event came: nobody to welcome
        email = self.renderer.email(self.renderer.welcome(data), data.email)
        await self.recorder.record(tx, event_id=event.id, event_type=event.type, message=email, user_id=data.user_id)

    async def on_contact_changed(self, tx: Tx, event: Envelope) -> None:
        data = UserContactChanged.model_validate(event.data)
        await Recipients.contact_changed(
            tx,
            user_id=data.user_id,
            email=data.email,
            name=data.name,
            phone=data.phone,
            sms_order_updates=data.sms_order_updates,
        )

    async def on_user_deleted(self, tx: Tx, event: Envelope) -> None:
        data = UserDeleted.model_validate(event.data)
        await Recipients.deleted(tx, data.user_id)

    async def _order_update(self, tx: Tx, event: Envelope, notice: Notice, user_id: str, address: str) -> None:
        contact = await Recipients.get(tx, user_id)
        if contact is not None and contact.deleted:
            return  # the account is erased: nobody to tell
        email = self.renderer.email(notice, address)
        await self.recorder.record(tx, event_id=event.id, event_type=event.type, message=email, user_id=user_id)
        await self._sms(tx, event, notice, contact)

    async def _sms(self, tx: Tx, event: Envelope, notice: Notice, contact: Contact | None) -> None:
        number = contact.sms_number if contact else None
        if contact is None or number is None:
            return
        sms = self.renderer.sms(notice, number)
        await self.recorder.record(tx, event_id=event.id, event_type=event.type, message=sms, user_id=contact.user_id)

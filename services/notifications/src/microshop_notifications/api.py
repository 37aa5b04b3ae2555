"""Notifications' HTTP API: the history of messages sent to the caller (every user's, for admins), dead letters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from microshop_kit.app import AdminDep, PrincipalDep
from microshop_kit.errors import forbidden
from microshop_notifications.handlers import DeadLetters
from microshop_notifications.store import MessageStore

router = APIRouter()


async def get_messages(request: Request) -> MessageStore:
    store: MessageStore = request.app.state.messages
    return store


async def get_dead_letters(request: Request) -> DeadLetters:
    dead: DeadLetters = request.app.state.dead_letters
    return dead


MessagesDep = Annotated[MessageStore, Depends(get_messages)]
DeadLettersDep = Annotated[DeadLetters, Depends(get_dead_letters)]
Limit = Annotated[int, Query(ge=1, le=100)]


class MessageOut(BaseModel):
    id: str
    channel: str
    subject: str
    status: str
    created_at: str
    sent_at: str | None


class MessagesOut(BaseModel):
    items: list[MessageOut]


@router.get("/api/v1/notifications", response_model=MessagesOut, tags=["notifications"])
async def list_notifications(
    principal: PrincipalDep,
    messages: MessagesDep,
    all_users: Annotated[bool, Query(alias="all", description="Every user's messages (admins only)")] = False,
    limit: Limit = 50,
) -> MessagesOut:
    """Messages sent (or being sent) to the caller, newest first."""
    if all_users and not principal.is_admin:
        raise forbidden("Only admins may list every user's notifications.")
    rows = await messages.history(user_id=None if all_users else principal.user_id, limit=limit)
    return MessagesOut(items=[MessageOut.model_validate(dict(row)) for row in rows])


class DeadMessageOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    channel: str
    recipient: str
    user_id: str | None
    subject: str
    attempts: int
    error: str | None
    created_at: str


class DeadEventOut(BaseModel):
    event_id: str
    type: str
    error: str
    deliveries: int
    created_at: str


class DeadLettersOut(BaseModel):
    #: Messages given up on: refused for good by the server or provider, or out of attempts.
    messages: list[DeadMessageOut]
    #: Events the service could not handle after the bus's bounded redeliveries.
    events: list[DeadEventOut]


@router.get("/api/v1/notifications/dead-letters", response_model=DeadLettersOut, tags=["notifications"])
async def list_dead_letters(
    _: AdminDep, messages: MessagesDep, dead_letters: DeadLettersDep, limit: Limit = 50
) -> DeadLettersOut:
    """What was given up on, newest first, with the last error (admins only). The command
    `python -m microshop_notifications retry-dead-letters` tries them again."""
    dead = await messages.dead(limit=limit)
    events = await dead_letters.events(limit=limit)
    return DeadLettersOut(
        messages=[DeadMessageOut.model_validate({**dict(row), "error": row["last_error"]}) for row in dead],
        events=[DeadEventOut.model_validate(dict(row)) for row in events],
    )

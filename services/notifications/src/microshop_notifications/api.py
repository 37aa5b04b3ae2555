"""Notifications' HTTP API: the history of messages sent to the caller (every user's, for admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from microshop_kit.app import PrincipalDep
from microshop_kit.errors import forbidden
from microshop_notifications.store import MessageStore

router = APIRouter()


def get_messages(request: Request) -> MessageStore:
    store: MessageStore = request.app.state.messages
    return store


MessagesDep = Annotated[MessageStore, Depends(get_messages)]


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
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> MessagesOut:
    """Messages sent (or being sent) to the caller, newest first."""
    if all_users and not principal.is_admin:
        raise forbidden("Only admins may list every user's notifications.")
    rows = await messages.history(user_id=None if all_users else principal.user_id, limit=limit)
    return MessagesOut(items=[MessageOut.model_validate(dict(row)) for row in rows])

"""Reads of the message log and conversations."""

from __future__ import annotations

from typing import Any

from conversations.models import Channel, Conversation, Message


def open_conversation_for_visitor(brand_id: int, channel: str, visitor_key: str) -> Conversation | None:
    return (
        Conversation.objects.filter(brand_id=brand_id, channel=channel, visitor_key=visitor_key, ended_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def messages_after(conversation_id: Any, after: int = 0, limit: int | None = None) -> list[Message]:
    """Stored messages with seq > after, in order. Inputs still in the inbox are not included."""
    query = Message.objects.filter(conversation_id=conversation_id, seq__gt=after).order_by("seq")
    return list(query[:limit] if limit else query)


def conversation_by_id(conversation_id: Any, channel: str | None = None) -> Conversation | None:
    query = Conversation.objects.select_related("brand").filter(pk=conversation_id)
    if channel:
        query = query.filter(channel=channel)
    try:
        return query.first()
    except (ValueError, TypeError):
        return None


__all__ = ["Channel", "conversation_by_id", "messages_after", "open_conversation_for_visitor"]

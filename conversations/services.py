"""Every change to a conversation goes through one function here.

Writes happen in a transaction holding the conversation's row; events are published and tasks
enqueued only after the commit (`publish_on_commit`, `transaction.on_commit`), so a client never
sees anything that is not stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from conversations import bulk, inbox, turns
from conversations.events import error_event, message_event, turn_event
from conversations.inbox import InputResult, PendingInput, as_uuid
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.publish import publish_on_commit
from conversations.task_queue import enqueue, enqueue_on_commit
from flows.models import Brand, Flow


def visitor_key_for(secret: str) -> str:
    """Conversations are found by a hash of the visitor's session value, never the value."""
    return hashlib.sha256(secret.encode()).hexdigest()


def lock_conversation(conversation_id: Any) -> Conversation:
    """The conversation row, locked until the transaction ends (PostgreSQL); SQLite serialises
    writers with IMMEDIATE transactions instead. One plain SELECT, no join (`.brand` is read when
    asked for): every turn of every protocol starts here, and the ORM's query took 0.5 ms of
    CPU where this takes 0.1. Raises Conversation.DoesNotExist, or ValueError for a bad id."""
    found = bulk.instances(
        Conversation, Conversation._meta.concrete_fields, where_in={"id": [as_uuid(conversation_id)]}, lock=True
    )
    if not found:
        raise Conversation.DoesNotExist(f"no conversation {conversation_id}")
    return found[0]


def number_messages(conversation: Conversation, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Message]:
    """Messages numbered for the end of a locked conversation's log, not yet stored."""
    numbered = []
    for direction, kind, payload in entries:
        conversation.last_seq += 1
        numbered.append(
            Message(
                conversation=conversation, seq=conversation.last_seq, direction=direction, kind=kind, payload=payload
            )
        )
    return numbered


def append_messages(conversation: Conversation, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Message]:
    """Number and store messages at the end of a locked conversation's log."""
    created = number_messages(conversation, entries)
    Message.objects.bulk_create(created)
    return created


# --- Opening, ending -------------------------------------------------------------------------


def conversation_open(
    brand: Brand,
    channel: str,
    *,
    visitor_key: str = "",
    user_id: str = "",
    external_id: str = "",
    meta: dict[str, Any] | None = None,
    conversation_id: uuid.UUID | None = None,
) -> Conversation:
    """Start a conversation. An assistant conversation runs its brand's published flow from the
    first state, in a worker."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            id=conversation_id or uuid.uuid4(),
            brand=brand,
            channel=channel,
            visitor_key=visitor_key,
            user_id=user_id[:200],
            external_id=external_id[:200],
            flow_version_id=_active_flow_versions({brand.pk}).get(brand.pk) if channel == Channel.ASSISTANT else None,
            meta=meta or {},
        )
        if channel == Channel.ASSISTANT:
            enqueue_on_commit("advance_flows", [str(conversation.pk)])
    return conversation


def _active_flow_versions(brand_ids: set[int]) -> dict[int, int | None]:
    """The published version of each brand's one active flow (a unique constraint), in one plain
    read: brands without an active flow are missing."""
    rows = bulk.select(Flow, ("brand", "published_version"), where_in={"brand": brand_ids, "is_active": [True]})
    return dict(rows)


NEW_CONVERSATION_FIELDS = (
    "id", "brand", "channel", "visitor_key", "user_id", "external_id", "flow_version", "flow_position", "turn_state",
    "turn_changed_at", "last_seq", "last_error", "meta", "created_at", "updated_at", "ended_at",
)  # fmt: skip


def assistant_conversations_open(visitors: Sequence[tuple[Brand, str, uuid.UUID]]) -> list[None]:
    """Open new visitors' assistant conversations, given as (brand, visitor key, id), with one
    INSERT and one task that starts all their flows (a web process's handshakes, batched)."""
    versions = _active_flow_versions({brand.pk for brand, _, _ in visitors})
    now = timezone.now()
    rows: list[tuple[Any, ...]] = [
        (conversation_id, brand.pk, Channel.ASSISTANT, visitor_key, "", "", versions.get(brand.pk), None,
         TurnState.IDLE, now, 0, "", {}, now, now, None)
        for brand, visitor_key, conversation_id in visitors
    ]  # fmt: skip
    with transaction.atomic():
        bulk.insert_rows(Conversation, NEW_CONVERSATION_FIELDS, rows)
        enqueue_on_commit("advance_flows", [str(conversation_id) for _, _, conversation_id in visitors])
    return [None] * len(rows)


def conversation_end(conversation_id: Any, reason: str = "ended") -> None:
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        if conversation.ended_at is None:
            conversation.ended_at = timezone.now()
            conversation.meta = {**conversation.meta, "ended_reason": reason}
            conversation.save(update_fields=["ended_at", "meta", "updated_at"])


def assistant_reset(conversation_id: Any) -> Conversation:
    """ResetSession: end the visitor's conversation and start a new one for the same visitor."""
    with transaction.atomic():
        old = lock_conversation(conversation_id)
        if old.ended_at is None:
            old.ended_at = timezone.now()
            old.meta = {**old.meta, "ended_reason": "reset by visitor"}
            old.save(update_fields=["ended_at", "meta", "updated_at"])
        Message.objects.filter(conversation=old, seq__isnull=True).delete()
        return conversation_open(old.brand, old.channel, visitor_key=old.visitor_key, user_id=old.user_id)


# --- The assistant: an inbox of visitor responses applied in order by a worker -----------------


def assistant_queue_input(
    conversation_id: Any, payload: dict[str, Any], *, client_id: str | None = None, reply_channel: str = ""
) -> InputResult:
    """Store one visitor response in the inbox and have a worker apply it (see `inbox`)."""
    item = PendingInput(as_uuid(conversation_id), payload, client_id, reply_channel)
    return inbox.queue_inputs([item])[0]


def assistant_resume(conversation: Conversation) -> None:
    """A visitor came back: if the flow has not started or inputs still wait (their task may have
    been lost with the broker), have a worker go on now instead of at the sweeper's next round."""
    if conversation.flow_version_id is None:
        return
    if conversation.flow_position is None or conversation.messages.filter(seq__isnull=True).exists():
        enqueue("advance_flows", [str(conversation.pk)])


def assistant_advance(conversation_id: Any) -> None:
    """Run one assistant conversation's flow up to the next point where it waits."""
    inbox.advance([conversation_id])


# --- Free-text turns: brand chat, sessions API, generated answers in flows --------------------


class Busy(Exception):
    """The conversation is not ready for a message (a turn is under way)."""


def conversation_accept_user_message(
    conversation_id: Any,
    text: str,
    *,
    kind: str = "UserText",
    extra: dict[str, Any] | None = None,
    client_id: str | None = None,
) -> Message:
    """Store a visitor's message and start generating the answer: idle → user_writing →
    user_committed, then a worker takes it. Raises Busy unless the conversation is ready.

    Four statements (lock, the turn's UPDATE with the new `last_seq`, its audit row, the
    message): a web process runs this for every visitor message, on the threads its event loop
    shares the GIL with."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        if conversation.turn_state not in turns.READY_FOR_INPUT:
            raise Busy(f"the conversation is {conversation.turn_state}")
        path: list[str] = [TurnState.USER_WRITING, TurnState.USER_COMMITTED]
        if conversation.turn_state != TurnState.IDLE:
            path.insert(0, TurnState.IDLE)
        payload = {"kind": kind, "content": text, **(extra or {})}
        (message,) = number_messages(conversation, [(Message.Direction.IN, kind, payload)])
        message.client_id = client_id or None
        turns.move_through(conversation, path, "visitor message", also=("last_seq",))
        Message.objects.bulk_create([message])
        publish_on_commit(conversation.pk, [message_event(message), turn_event(conversation.turn_state)])
        enqueue_on_commit("generate_answer", str(conversation.pk), message.seq)
    return message


def conversation_fail(
    conversation_id: Any,
    reason: str,
    *,
    visitor_message: str,
    code: str = "generation_failed",
    stuck_before: datetime | None = None,
) -> bool:
    """Move a turn under way to `error`, telling connected clients. False if nothing was under
    way (or, with `stuck_before`, if the turn moved since then)."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        if conversation.turn_state not in turns.IN_FLIGHT:
            return False
        if stuck_before is not None and conversation.turn_changed_at >= stuck_before:
            return False
        turns.move(conversation, TurnState.ERROR, reason)
        conversation.last_error = visitor_message
        conversation.save(update_fields=["last_error", "updated_at"])
        publish_on_commit(conversation.pk, [error_event(code, visitor_message), turn_event(TurnState.ERROR, reason)])
    return True

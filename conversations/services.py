"""Every change to a conversation goes through one function here.

Writes happen in a transaction holding the conversation's row; events are published and tasks
enqueued only after the commit (`publish_on_commit`, `transaction.on_commit`), so a client never
sees anything that is not stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from conversations import bulk, inbox, turns
from conversations.events import Event, error_event, message_event, turn_event
from conversations.inbox import InputResult, PendingInput, as_uuid
from conversations.models import Channel, Conversation, Message, TurnState, TurnTransition
from conversations.publish import publish_many, publish_on_commit
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


class UnknownConversation(Exception):
    """No open conversation of that brand and channel has this id."""


@dataclass(frozen=True)
class VisitorMessage:
    """A visitor's message as a web process received it, for `accept_visitor_messages`.

    `opens`: the first message of a new conversation with the id `conversation_id` (of `brand_id`
    on `channel`, for `user_id`). Otherwise the conversation must exist; when `brand_id` and
    `channel` are given it must also be theirs and not have ended."""

    conversation_id: uuid.UUID
    text: str
    kind: str = "UserText"
    extra: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    opens: bool = False
    brand_id: int | None = None
    channel: str | None = None
    user_id: str = ""


Accepted = Message | Busy | UnknownConversation


def accept_visitor_messages(items: Sequence[VisitorMessage]) -> list[Accepted]:
    """Store visitors' messages and start generating their answers: idle → user_writing →
    user_committed, then a worker takes each. One result per message, in order: the stored
    message, or Busy (a turn is under way) or UnknownConversation, as values.

    One transaction for the batch: one SELECT locking the conversations continued, one INSERT
    each for the conversations opened, the messages and the turns' audit rows, an UPDATE per
    conversation continued, then one publish for all their events and a task per answer. A web
    process hands it every message that arrived while its previous batch was being written
    (the brand chat's sockets), on the threads its event loop shares the GIL with."""
    now = timezone.now()
    results: list[Accepted] = []
    with transaction.atomic():
        continued = {item.conversation_id for item in items if not item.opens}
        conversations = {
            conversation.pk: conversation
            for conversation in bulk.instances(
                Conversation, Conversation._meta.concrete_fields, where_in={"id": continued}, order_by="id", lock=True
            )  # in id order: web processes locking overlapping batches never wait for each other in a circle
        } if continued else {}  # fmt: skip
        read_states = {pk: conversation.turn_state for pk, conversation in conversations.items()}
        opened: list[Conversation] = []
        message_rows: list[tuple[Any, ...]] = []
        transition_rows: list[tuple[Any, ...]] = []
        events: dict[uuid.UUID, list[Event]] = {}
        for item in items:
            conversation = conversations.get(item.conversation_id)
            if item.opens:
                if conversation is not None or item.brand_id is None or not item.channel:
                    results.append(UnknownConversation(f"cannot open {item.conversation_id}"))
                    continue
                conversation = conversations[item.conversation_id] = _new_conversation(item, now)
                opened.append(conversation)
            elif conversation is None or not _may_continue(conversation, item):
                results.append(UnknownConversation(f"no open conversation {item.conversation_id}"))
                continue
            if conversation.turn_state not in turns.READY_FOR_INPUT:
                results.append(Busy(f"the conversation is {conversation.turn_state}"))
                continue
            path: list[str] = [TurnState.USER_WRITING, TurnState.USER_COMMITTED]
            if conversation.turn_state != TurnState.IDLE:
                path.insert(0, TurnState.IDLE)
            from_state, via, to_state = turns.plan_through(conversation, path, now)
            transition_rows.append((conversation.pk, from_state, via, to_state, "visitor message", now))
            payload = {"kind": item.kind, "content": item.text, **item.extra}
            conversation.last_seq += 1
            message = Message(
                conversation_id=conversation.pk, seq=conversation.last_seq, direction=Message.Direction.IN,
                kind=item.kind, payload=payload, client_id=item.client_id or None, created_at=now,
            )  # fmt: skip
            message_rows.append(
                (conversation.pk, message.seq, message.direction, item.kind, payload, message.client_id, False, "", now)
            )
            events.setdefault(conversation.pk, []).extend((message_event(message), turn_event(to_state)))
            results.append(message)
        if opened:
            bulk.insert_rows(Conversation, NEW_CONVERSATION_FIELDS, [_new_conversation_row(c) for c in opened])
        for pk, state in read_states.items():
            conversation = conversations[pk]
            if conversation.turn_state == state:
                continue  # refused, or not in this batch's messages
            conversation.updated_at = now
            changed = ("turn_state", "turn_changed_at", "updated_at", "last_seq")
            if bulk.update_where(conversation, changed, turn_state=state) != 1:
                # The row lock (or SQLite's write lock) makes this a bug, not a race to lose.
                raise turns.TransitionRefused(f"conversation {pk} changed under its lock")
        if message_rows:
            bulk.insert_rows(Message, inbox.MESSAGE_FIELDS, message_rows)
            bulk.insert_rows(TurnTransition, turns.TRANSITION_FIELDS, transition_rows)
            answers = [(str(result.conversation_id), result.seq) for result in results if isinstance(result, Message)]
            transaction.on_commit(lambda: _announce(list(events.items()), answers))
    return results


def _new_conversation(item: VisitorMessage, now: datetime) -> Conversation:
    assert item.brand_id is not None and item.channel
    return Conversation(
        id=item.conversation_id, brand_id=item.brand_id, channel=item.channel, user_id=item.user_id[:200],
        turn_state=TurnState.IDLE, turn_changed_at=now, last_seq=0, meta={}, created_at=now, updated_at=now,
    )  # fmt: skip


def _may_continue(conversation: Conversation, item: VisitorMessage) -> bool:
    if item.brand_id is None and item.channel is None:
        return True
    return (
        conversation.brand_id == item.brand_id
        and conversation.channel == item.channel
        and conversation.ended_at is None
    )


def _new_conversation_row(conversation: Conversation) -> tuple[Any, ...]:
    """An opened conversation as the values of NEW_CONVERSATION_FIELDS."""
    c = conversation
    return (c.pk, c.brand_id, c.channel, "", c.user_id, "", None, None, c.turn_state, c.turn_changed_at, c.last_seq,
            "", c.meta, c.created_at, c.updated_at, None)  # fmt: skip


def _announce(events: list[tuple[uuid.UUID, list[Event]]], answers: list[tuple[str, int | None]]) -> None:
    publish_many(events)
    for conversation_id, seq in answers:
        enqueue("generate_answer", conversation_id, seq)


def conversation_accept_user_message(
    conversation_id: Any,
    text: str,
    *,
    kind: str = "UserText",
    extra: dict[str, Any] | None = None,
    client_id: str | None = None,
) -> Message:
    """One visitor message for an existing conversation (`accept_visitor_messages`). Raises
    Busy unless the conversation is ready, Conversation.DoesNotExist if there is none."""
    item = VisitorMessage(as_uuid(conversation_id), text, kind, dict(extra or {}), client_id)
    (result,) = accept_visitor_messages([item])
    if isinstance(result, UnknownConversation):
        raise Conversation.DoesNotExist(str(result))
    if isinstance(result, Busy):
        raise result
    return result


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

"""Every change to a conversation goes through one function here.

Writes happen in a transaction holding the conversation's row; events are published and tasks
enqueued only after the commit (`publish_on_commit`, `transaction.on_commit`), so a client never
sees anything that is not stored.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations import turns
from conversations.events import Event, error_event, message_event, turn_event
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.publish import publish_on_commit
from flows.engine import Generate, Position, Rejection, SendRequest
from flows.models import Brand
from flows.selectors import active_flow_version_id, flow_for_version

logger = logging.getLogger(__name__)


def visitor_key_for(secret: str) -> str:
    """Conversations are found by a hash of the visitor's session value, never the value."""
    return hashlib.sha256(secret.encode()).hexdigest()


def lock_conversation(conversation_id: Any) -> Conversation:
    """The conversation row, locked until the transaction ends (PostgreSQL); SQLite serialises
    writers with IMMEDIATE transactions instead."""
    return Conversation.objects.select_for_update().select_related("brand").get(pk=conversation_id)


def append_messages(conversation: Conversation, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Message]:
    """Number and store messages at the end of a locked conversation's log."""
    created = []
    for direction, kind, payload in entries:
        conversation.last_seq += 1
        created.append(
            Message(
                conversation=conversation, seq=conversation.last_seq, direction=direction, kind=kind, payload=payload
            )
        )
    Message.objects.bulk_create(created)
    return created


def enqueue(task_name: str, *args: Any) -> None:
    """Send a task now. A broker that is down must not fail the caller: what was stored stays
    stored, and the sweeper (`sweeper.requeue_stranded`) enqueues it again."""
    from conversations import tasks  # tasks import services

    try:
        getattr(tasks, task_name).delay(*args)
    except Exception:
        logger.warning("could not enqueue %s%r; the sweeper will retry", task_name, args, exc_info=True)


def _enqueue_on_commit(task_name: str, *args: Any) -> None:
    transaction.on_commit(lambda: enqueue(task_name, *args))


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
            flow_version_id=active_flow_version_id(brand) if channel == Channel.ASSISTANT else None,
            meta=meta or {},
        )
        if channel == Channel.ASSISTANT:
            _enqueue_on_commit("advance_flow", str(conversation.pk))
    return conversation


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


class InputResult(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    BUSY = "busy"


def assistant_queue_input(
    conversation_id: Any, payload: dict[str, Any], *, client_id: str | None = None, reply_channel: str = ""
) -> InputResult:
    """Store a visitor's response in the inbox and have a worker apply it.

    Inputs are applied in arrival order, each once: a retry with the same `client_id` is a
    duplicate (the unique constraint decides races); more than MAX_PENDING_INPUTS waiting is
    `busy`. No row lock: the inbox is append-only and the worker orders it by id.
    """
    # No transaction: one read and one INSERT in autocommit hold SQLite's write lock for the
    # INSERT alone, instead of queueing behind the worker for a whole BEGIN IMMEDIATE.
    try:
        if client_id:
            earlier = list(
                Message.objects.filter(conversation_id=conversation_id, client_id=client_id).values_list(
                    "seq", flat=True
                )[:1]
            )
            if earlier:
                if earlier[0] is None:
                    # A retry of an input still waiting: its first enqueue may have been lost.
                    _enqueue_on_commit("advance_flow", str(conversation_id))
                return InputResult.DUPLICATE
        waiting = Message.objects.filter(conversation_id=conversation_id, seq__isnull=True).count()
        if waiting >= settings.MAX_PENDING_INPUTS:
            return InputResult.BUSY
        Message.objects.create(
            conversation_id=conversation_id,
            seq=None,
            direction=Message.Direction.IN,
            kind=str(payload["kind"]),
            payload=payload,
            client_id=client_id,
            reply_channel=reply_channel[:200],
        )
        _enqueue_on_commit("advance_flow", str(conversation_id))
    except IntegrityError:
        return InputResult.DUPLICATE
    return InputResult.QUEUED


class _Log:
    """The messages one run appends, numbered as they come and stored in one INSERT."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.new: list[Message] = []

    def add(self, direction: str, kind: str, payload: dict[str, Any], client_id: str | None = None) -> Message:
        self.conversation.last_seq += 1
        message = Message(
            conversation=self.conversation, seq=self.conversation.last_seq, direction=direction, kind=kind,
            payload=payload, client_id=client_id,
        )  # fmt: skip
        self.new.append(message)
        return message


def assistant_advance(conversation_id: Any) -> None:
    """Start the flow if it has not started, then apply every waiting input in order.

    Safe to run twice and from several workers at once: each run holds the conversation's row
    and works only on what is still waiting, so a second run finds nothing to do. One step costs
    a handful of statements: lock, read the inbox, delete it, one turn UPDATE, two INSERTs.
    """
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        if conversation.flow_version_id is None or conversation.ended_at is not None:
            return
        if conversation.turn_state in turns.IN_FLIGHT:
            # A generated answer is being written; the generation task calls us again when done.
            return
        flow = flow_for_version(conversation.flow_version_id)
        events: list[Event] = []
        log = _Log(conversation)
        if conversation.flow_position is None:
            step = flow.start()
            events += _apply_actions(conversation, log, step.actions)
            conversation.flow_position = step.position.to_json()
        inbox = list(Message.objects.filter(conversation=conversation, seq__isnull=True).order_by("id"))
        done: list[int] = []
        for pending in inbox:
            done.append(pending.pk)
            position = Position.from_json(conversation.flow_position)
            result = flow.respond(position, pending.payload)
            if isinstance(result, Rejection):
                events.append(error_event("unexpected_response", result.reason, pending.reply_channel or None))
                continue
            payload = dict(pending.payload)
            if payload.get("kind") == "ChoiceResponse" and not payload.get("content"):
                # The seed client draws `message.content` on replay.
                payload["content"] = flow.choice_content(str(payload["groupId"]), str(payload["itemId"])) or ""
            # The accepted input is stored anew, so that ids follow the order of the log.
            accepted = log.add(Message.Direction.IN, pending.kind, payload, pending.client_id)
            events.append(message_event(accepted))
            events += _apply_actions(conversation, log, result.actions)
            conversation.flow_position = result.position.to_json()
            generating = any(isinstance(a, Generate) for a in result.actions)
            path: list[str] = [] if conversation.turn_state == TurnState.IDLE else [TurnState.IDLE]
            path += [TurnState.USER_WRITING, TurnState.USER_COMMITTED, TurnState.AI_GENERATING]
            if not generating:
                path += [TurnState.AI_COMMITTED, TurnState.IDLE]
            turns.move_through(conversation, path, "flow step")
            if generating:
                # The rest of the chain waits in meta; generation answers now and the inbox
                # waits until it has committed.
                break
        if done:
            Message.objects.filter(pk__in=done).delete()
        Message.objects.bulk_create(log.new)
        conversation.save(update_fields=["flow_position", "last_seq", "meta", "updated_at"])
        publish_on_commit(conversation.pk, events)


def _apply_actions(conversation: Conversation, log: _Log, actions: Iterable[object]) -> list[Event]:
    """Log the bot's requests of one step. A generation action goes to a worker; the requests
    after it wait in `meta["after_generation"]` until the answer is stored."""
    events: list[Event] = []
    actions = list(actions)
    for index, action in enumerate(actions):
        if isinstance(action, SendRequest):
            message = log.add(Message.Direction.OUT, str(action.message["kind"]), action.message)
            events.append(message_event(message))
        elif isinstance(action, Generate):
            after = [a.message for a in actions[index + 1 :] if isinstance(a, SendRequest)]
            conversation.meta = {**conversation.meta, "after_generation": after}
            # The visitor's text that asked for it is the last message logged.
            _enqueue_on_commit("generate_answer", str(conversation.pk), conversation.last_seq)
            break
    return events


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
    user_committed, then a worker takes it. Raises Busy unless the conversation is ready."""
    with transaction.atomic():
        conversation = lock_conversation(conversation_id)
        if conversation.turn_state not in turns.READY_FOR_INPUT:
            raise Busy(f"the conversation is {conversation.turn_state}")
        turns.back_to_idle(conversation, "new visitor message")
        turns.move_through(conversation, [TurnState.USER_WRITING, TurnState.USER_COMMITTED], "visitor message")
        payload = {"kind": kind, "content": text, **(extra or {})}
        (message,) = append_messages(conversation, [(Message.Direction.IN, kind, payload)])
        if client_id:
            message.client_id = client_id
            message.save(update_fields=["client_id"])
        conversation.save(update_fields=["last_seq", "updated_at"])
        publish_on_commit(conversation.pk, [message_event(message), turn_event(conversation.turn_state)])
        _enqueue_on_commit("generate_answer", str(conversation.pk), message.seq)
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

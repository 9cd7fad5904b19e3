"""The assistant's inbox: visitors' responses stored by web processes, applied in order by workers.

Both sides work in batches. A web process stores the responses that arrived while its previous
write was running with one INSERT and enqueues one task for all of them (`queue_inputs`); a
worker applies the waiting inputs of many conversations in one transaction (`advance`). Under
light load a batch holds one input and nothing waits for it; under heavy load the fixed cost of
a transaction, a broker message and a task is shared by the whole batch.

Inputs are applied in arrival order (the inbox is ordered by id), each once: a retry with the
same `client_id` is a duplicate, and the unique constraint decides races between processes.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations import bulk, turns
from conversations.events import Event, error_event
from conversations.models import Conversation, Message, TurnState, TurnTransition
from conversations.publish import publish_many
from conversations.task_queue import enqueue, enqueue_on_commit
from flows.engine import Flow, Generate, Position, Rejection, SendRequest
from flows.selectors import flow_for_version

logger = logging.getLogger(__name__)


class InputResult(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    BUSY = "busy"


@dataclass(frozen=True)
class PendingInput:
    """A visitor's response as a web process received it."""

    conversation_id: uuid.UUID
    payload: dict[str, Any]
    client_id: str | None = None
    reply_channel: str = ""


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# --- Web side: store and enqueue ----------------------------------------------------------------


def queue_inputs(inputs: Sequence[PendingInput]) -> list[InputResult]:
    """Store responses in the inbox and have a worker apply them; one result per input.

    More than MAX_PENDING_INPUTS waiting in one conversation is `busy`. No transaction and no
    row lock: two reads and one INSERT in autocommit hold SQLite's write lock for the INSERT
    alone instead of queueing behind a worker, and the worker orders the inbox by id.
    """
    if not inputs:
        return []
    conversation_ids = {item.conversation_id for item in inputs}
    client_ids = {item.client_id for item in inputs if item.client_id}
    known: dict[tuple[uuid.UUID, str | None], int | None] = {}
    if client_ids:
        rows = bulk.select(
            Message,
            ("conversation", "client_id", "seq"),
            where_in={"conversation": conversation_ids, "client_id": client_ids},
        )
        known = {(conversation_id, client_id): seq for conversation_id, client_id, seq in rows}
    waiting: dict[uuid.UUID, int] = Counter(
        conversation_id
        for (conversation_id,) in bulk.select(
            Message, ("conversation",), where_in={"conversation": conversation_ids}, null=("seq",)
        )
    )
    results: list[InputResult] = []
    rows_to_store: list[tuple[Any, ...]] = []
    now = timezone.now()
    wake: set[uuid.UUID] = set()
    for item in inputs:
        key = (item.conversation_id, item.client_id)
        if item.client_id and key in known:
            if known[key] is None:
                # A retry of an input still waiting: its first enqueue may have been lost.
                wake.add(item.conversation_id)
            results.append(InputResult.DUPLICATE)
            continue
        if waiting.get(item.conversation_id, 0) >= settings.MAX_PENDING_INPUTS:
            results.append(InputResult.BUSY)
            continue
        waiting[item.conversation_id] = waiting.get(item.conversation_id, 0) + 1
        if item.client_id:
            known[key] = None
        rows_to_store.append(_inbox_row(item, now))
        results.append(InputResult.QUEUED)
        wake.add(item.conversation_id)
    if rows_to_store:
        _store(rows_to_store, results)
    if wake:
        _enqueue_advance(wake)
    return results


INBOX_FIELDS = ("conversation", "direction", "kind", "payload", "client_id", "reply_channel", "created_at", "cut_off")


def _inbox_row(item: PendingInput, now: datetime) -> tuple[Any, ...]:
    """A waiting input (no `seq` yet) as the values of INBOX_FIELDS."""
    kind = str(item.payload["kind"])
    return (
        item.conversation_id,
        Message.Direction.IN,
        kind,
        item.payload,
        item.client_id,
        item.reply_channel[:200],
        now,
        False,
    )


def _store(rows: list[tuple[Any, ...]], results: list[InputResult]) -> None:
    """One INSERT for the batch; if another process won a race on a client id, store the rows
    one by one so that only the loser is a duplicate."""
    try:
        with transaction.atomic():
            bulk.insert_rows(Message, INBOX_FIELDS, rows)
        return
    except IntegrityError:
        pass
    queued = [index for index, result in enumerate(results) if result is InputResult.QUEUED]
    for index, row in zip(queued, rows, strict=True):
        try:
            with transaction.atomic():
                bulk.insert_rows(Message, INBOX_FIELDS, [row])
        except IntegrityError:
            results[index] = InputResult.DUPLICATE


def _enqueue_advance(conversation_ids: Iterable[uuid.UUID]) -> None:
    enqueue("advance_flows", sorted(str(conversation_id) for conversation_id in conversation_ids))


# --- Worker side: apply ----------------------------------------------------------------------------


MESSAGE_FIELDS = (
    "conversation",
    "seq",
    "direction",
    "kind",
    "payload",
    "client_id",
    "cut_off",
    "reply_channel",
    "created_at",
)
CONVERSATION_FIELDS = ("flow_position", "last_seq", "meta", "turn_state", "turn_changed_at", "updated_at")


class _Run:
    """What applying one conversation's inbox adds: messages numbered as they come, turn
    audit rows, events to publish; rows as values of MESSAGE_FIELDS and turns.TRANSITION_FIELDS,
    written for the whole batch at once."""

    def __init__(self, conversation: Conversation, now: datetime) -> None:
        self.conversation = conversation
        self.now = now
        self.messages: list[tuple[Any, ...]] = []
        self.transitions: list[tuple[Any, ...]] = []
        self.events: list[Event] = []
        self.generate_after: int | None = None
        # The fields of the conversation's row this run changes: only those are written.
        self.changed: set[str] = {"updated_at"}

    def log(self, direction: str, kind: str, payload: dict[str, Any], client_id: str | None = None) -> None:
        self.conversation.last_seq += 1
        self.changed.add("last_seq")
        seq = self.conversation.last_seq
        self.messages.append((self.conversation.pk, seq, direction, kind, payload, client_id, False, "", self.now))
        self.events.append(
            {"type": "message", "seq": seq, "direction": direction, "kind": kind, "payload": payload, "cut_off": False}
        )

    def move_through(self, states: list[str], reason: str) -> None:
        self.changed.update(("turn_state", "turn_changed_at"))
        from_state, via, to_state = turns.plan_through(self.conversation, states, self.now)
        self.transitions.append(
            (self.conversation.pk, from_state, via, to_state, reason, self.conversation.turn_changed_at)
        )


# The most conversations one task advances: the ones it was sent for plus any others with inputs
# waiting, so that tasks queued behind a busy worker find their work done instead of waiting.
MAX_BATCH = 500


# Conversations with inputs waiting whose turn is not in flight, oldest input first: the order
# also walks the inbox's partial index (waiting rows only): unordered, SQLite scanned the index
# of every message ever stored, a cost that grew with the log (the ten-minute soak lost 40 % of
# its throughput to it).
WAITING_ELSEWHERE = bulk.CompiledQuery(
    lambda: (
        Message.objects.filter(seq__isnull=True, conversation__ended_at__isnull=True)
        .exclude(conversation__turn_state__in=turns.IN_FLIGHT)
        .order_by("created_at")
        .values_list("conversation_id")[:MAX_BATCH]
    )
)


def advance(conversation_ids: Iterable[Any]) -> None:
    """Start each conversation's flow if it has not started, then apply its waiting inputs, and
    those of other conversations whose inputs wait (up to MAX_BATCH in all).

    Safe to run twice and from several workers at once: the run holds the conversations' rows
    and works only on what is still waiting, so a second run finds nothing to do. The ones asked
    for are locked in id order (two batches cannot deadlock); the others only if no other run
    holds them (`skip_locked`). The whole batch is a handful of statements: lock, read the
    inboxes, delete them, insert messages and audit rows, update the rows.
    """
    ids = sorted({as_uuid(conversation_id) for conversation_id in conversation_ids})
    if not ids:
        return
    published: list[tuple[Any, list[Event]]] = []
    with transaction.atomic():
        locked = _lock_conversations(ids, skip_locked=False)
        others = {conversation_id for (conversation_id,) in WAITING_ELSEWHERE.rows()}.difference(ids)
        if others:
            locked += _lock_conversations(sorted(others)[: max(0, MAX_BATCH - len(ids))], skip_locked=True)
        # A conversation whose generated answer is being written waits: generation calls us again.
        runnable = [c for c in locked if c.flow_version_id and not c.ended_at and c.turn_state not in turns.IN_FLIGHT]
        if not runnable:
            return
        inboxes: dict[uuid.UUID, list[_Waiting]] = defaultdict(list)
        for row in bulk.select(
            Message, _Waiting.FIELDS, where_in={"conversation": [c.pk for c in runnable]}, null=("seq",), order_by="id"
        ):
            waiting_input = _Waiting(*row)
            inboxes[waiting_input.conversation_id].append(waiting_input)
        done: list[int] = []
        runs: list[_Run] = []
        now = timezone.now()
        for conversation in runnable:
            run = _Run(conversation, now)
            inbox = inboxes.get(conversation.pk, [])
            if conversation.flow_position is not None and not inbox:
                continue
            done += _apply_inbox(run, flow_for_version(conversation.flow_version_id), inbox)
            runs.append(run)
        for run in runs:
            run.conversation.updated_at = now
        bulk.delete(Message, done)
        bulk.insert_rows(Message, MESSAGE_FIELDS, [message for run in runs for message in run.messages])
        bulk.insert_rows(TurnTransition, turns.TRANSITION_FIELDS, [row for run in runs for row in run.transitions])
        by_changed: dict[tuple[str, ...], list[Conversation]] = defaultdict(list)
        for run in runs:
            by_changed[tuple(name for name in CONVERSATION_FIELDS if name in run.changed)].append(run.conversation)
        for names, conversations in by_changed.items():
            bulk.update(conversations, names)
        for run in runs:
            published.append((run.conversation.pk, run.events))
            if run.generate_after is not None:
                _enqueue_generation_on_commit(run.conversation.pk, run.generate_after)
        transaction.on_commit(lambda: publish_many(published))


# What a batch reads of each conversation, in the model's field order (as `from_db` takes
# them). The times are only written, and only by the runs that change them.
LOCKED_FIELDS = [
    field
    for field in Conversation._meta.concrete_fields
    if field.name in {"id", "flow_position", "last_seq", "meta", "turn_state", "flow_version", "ended_at"}
]


def _lock_conversations(ids: Sequence[uuid.UUID], *, skip_locked: bool) -> list[Conversation]:
    """The conversations `ids` (the fields a batch reads), their rows locked in id order."""
    return bulk.instances(
        Conversation, LOCKED_FIELDS, where_in={"id": ids}, order_by="id", lock=True, skip_locked=skip_locked
    )


@dataclass(frozen=True, slots=True)
class _Waiting:
    """An input in the inbox, as a batch reads it."""

    FIELDS: ClassVar[tuple[str, ...]] = ("id", "conversation", "kind", "payload", "client_id", "reply_channel")

    pk: int
    conversation_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    client_id: str | None
    reply_channel: str


def _apply_inbox(run: _Run, flow: Flow, inbox: list[_Waiting]) -> list[int]:
    """Apply one conversation's waiting inputs in order; the ids of the inputs consumed."""
    conversation = run.conversation
    if conversation.flow_position is None:
        step = flow.start()
        _apply_actions(run, step.actions)  # a start that generates is not allowed by the engine
        conversation.flow_position = step.position.to_json()
        run.changed.add("flow_position")
    done: list[int] = []
    for pending in inbox:
        done.append(pending.pk)
        position = Position.from_json(conversation.flow_position)
        result = flow.respond(position, pending.payload)
        if isinstance(result, Rejection):
            run.events.append(error_event("unexpected_response", result.reason, pending.reply_channel or None))
            continue
        payload = dict(pending.payload)
        if payload.get("kind") == "ChoiceResponse" and not payload.get("content"):
            # The seed client draws `message.content` on replay.
            payload["content"] = flow.choice_content(str(payload["groupId"]), str(payload["itemId"])) or ""
        # The accepted input is stored anew, so that ids follow the order of the log.
        run.log(Message.Direction.IN, pending.kind, payload, pending.client_id)
        generating = _apply_actions(run, result.actions)
        conversation.flow_position = result.position.to_json()
        run.changed.add("flow_position")
        path: list[str] = [] if conversation.turn_state == TurnState.IDLE else [TurnState.IDLE]
        path += [TurnState.USER_WRITING, TurnState.USER_COMMITTED, TurnState.AI_GENERATING]
        if not generating:
            path += [TurnState.AI_COMMITTED, TurnState.IDLE]
        run.move_through(path, "flow step")
        if generating:
            # The rest of the inbox waits until the generated answer has been stored.
            break
    return done


def _apply_actions(run: _Run, actions: Iterable[object]) -> bool:
    """Log the bot's requests of one step; whether it asked for a generated answer. That goes
    to a worker; the requests after it wait in `meta["after_generation"]` until it is stored."""
    actions = list(actions)
    for index, action in enumerate(actions):
        if isinstance(action, SendRequest):
            run.log(Message.Direction.OUT, str(action.message["kind"]), action.message)
        elif isinstance(action, Generate):
            after = [a.message for a in actions[index + 1 :] if isinstance(a, SendRequest)]
            run.conversation.meta = {**run.conversation.meta, "after_generation": after}
            run.changed.add("meta")
            # The visitor's text that asked for it is the last message logged.
            run.generate_after = run.conversation.last_seq
            return True
    return False


def _enqueue_generation_on_commit(conversation_id: Any, user_seq: int) -> None:
    enqueue_on_commit("generate_answer", str(conversation_id), user_seq)

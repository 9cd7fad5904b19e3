"""Answer one visitor message: claim the turn, ground, stream, store, then announce the commit.

`run_generation` is the body of the Celery task `generate_answer` (late acks: a worker that dies
makes the broker deliver it again), so it is safe to run twice:

- the turn is claimed with the conditional move user_committed → ai_generating; whoever loses
  the race, or finds the answer already stored, does nothing;
- a run that finds the turn already ai_generating for the same message is a redelivery after a
  worker died mid-answer. It never generates a second answer: it keeps what was streamed (the
  pieces are in Redis, see `streams`) as a cut-off message and moves the turn to `error` with a
  message the visitor sees. If the first run is in fact still alive (its heartbeat is fresh), the
  redelivery leaves the turn to it.

The stream runs on the worker process's streaming loop (`relay.run`; with GENERATION_STREAM_PROCESS,
on the loop of a child process, `streamer.py`), which stores and publishes the pieces of all the
process's streams in batches; the answer is stored once its pieces are out, in one transaction
holding the conversation's row, and announced only after that commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from conversations import bulk, services, task_queue, turns
from conversations.events import Event, message_event, turn_event
from conversations.generation import relay as stream_relay
from conversations.generation import streamer, streams
from conversations.generation.base import ChatTurn, GenerationRequest, Provider, ProviderError, ScoredProduct
from conversations.generation.budget import BUDGET_SPENT_MESSAGE, budget_spent, record_usage
from conversations.generation.language import detect_language
from conversations.generation.offline import OfflineProvider
from conversations.generation.providers import FixedTextProvider, provider_for
from conversations.generation.retrieval import retrieve
from conversations.inbox import MESSAGE_FIELDS
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.publish import publish_on_commit
from flows.models import Brand

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 20
# The visitor's earlier texts that keep a short reply in the conversation's language and topic.
EARLIER_TEXTS = 2
PRODUCT_LIMIT = 3
FAILED_MESSAGE = "Sorry, I could not answer right now. Please send your message again."
INTERRUPTED_MESSAGE = "Sorry, the answer was interrupted. Please send your message again."


@dataclass
class Attempt:
    stream_id: str
    provider: str
    pieces: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass
class Plan:
    conversation_id: Any
    user_seq: int
    brand_id: int
    channel: str
    request: GenerationRequest
    provider: Provider
    fallback: bool
    notice: str = ""  # "budget_spent" when the answer is a notice instead of the model's


def run_generation(conversation_id: Any, user_seq: int) -> None:
    with _preparing():
        claim = _claim(conversation_id, user_seq)
    if claim.outcome == "recover":
        _recover(conversation_id, user_seq)
        return
    if claim.outcome != "claimed":
        logger.info("generation for %s #%s: nothing to do (%s)", conversation_id, user_seq, claim.outcome)
        return
    try:
        with _preparing():
            plan = _plan(claim, user_seq)
        with stream_relay.heartbeat(conversation_id, user_seq):
            attempts = _run_stream(plan)
    except Exception:
        logger.exception("generation for %s #%s failed before it could store an answer", conversation_id, user_seq)
        services.conversation_fail(conversation_id, "generation crashed", visitor_message=FAILED_MESSAGE)
        streams.forget(conversation_id, user_seq, [])
        raise
    with _preparing():
        _store(plan, attempts)


_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@contextmanager
def _preparing() -> Iterator[None]:
    """At most GENERATION_PREPARE_CONCURRENCY answers of a process claim, ground or store at once.

    That work is Python and database calls under the GIL; the process's streaming loop needs
    the GIL for every piece it delivers. With a thread pool (many answers per process), a
    hundred answers starting together kept that loop waiting behind them, and each other: one
    at a time, chunk delivery p99 at 100 streams fell from 57-63 to 10-26 ms and the worker
    spent less CPU (docs/performance.md). A prefork child runs one answer: never waits here."""
    with _slots_lock:
        slot = _slots.get(os.getpid())
        if slot is None:
            slot = _slots[os.getpid()] = threading.BoundedSemaphore(
                max(1, int(getattr(settings, "GENERATION_PREPARE_CONCURRENCY", 1)))
            )
    with slot:
        yield


# --- Claiming the turn -----------------------------------------------------------------------


@dataclass
class Claim:
    """What claiming the turn found: `outcome` is "claimed", "recover" (a redelivery of a turn
    already under way) or why there is nothing to do; a claimed turn comes with the conversation
    and its newest messages (`latest`, newest first), which grounding reads too."""

    outcome: str
    conversation: Conversation | None = None
    latest: list[Message] = field(default_factory=list)


# What an answer reads of the newest messages: enough for the history and the visitor's text.
WINDOW_FIELDS = [
    field
    for field in Message._meta.concrete_fields
    if field.name in {"id", "conversation", "seq", "direction", "kind", "payload", "cut_off"}
]


def _newest_messages(conversation: Conversation) -> list[Message]:
    """The HISTORY_LIMIT + 1 newest messages of the log, newest first, in one plain SELECT (the
    ORM's query building was most of an answer's start: docs/performance.md)."""
    return bulk.instances(
        Message, WINDOW_FIELDS, where_in={"conversation": [conversation.pk]}, not_null=("seq",), order_by="-seq",
        limit=HISTORY_LIMIT + 1,
    )  # fmt: skip


def _latest_user_seq(conversation: Conversation, newest: list[Message]) -> int | None:
    for message in newest:
        if message.direction == Message.Direction.IN:
            return message.seq
    if len(newest) <= HISTORY_LIMIT:
        return None  # the whole log is in `newest`
    latest = (
        Message.objects.filter(conversation=conversation, direction=Message.Direction.IN, seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return latest


def _claim(conversation_id: Any, user_seq: int) -> Claim:
    with transaction.atomic():
        try:
            conversation = services.lock_conversation(conversation_id)
        except (Conversation.DoesNotExist, ValueError):
            return Claim("no such conversation")
        current = conversation.meta.get("generation")
        if conversation.turn_state == TurnState.AI_GENERATING:
            if current and current.get("user_seq") == user_seq:
                return Claim("recover")
            if current is None and conversation.channel == Channel.ASSISTANT:
                # The flow moved the turn to ai_generating itself; the marker is our claim.
                _mark(conversation, user_seq)
                return Claim("claimed", conversation, _newest_messages(conversation))
            return Claim("another turn is being answered")
        if conversation.turn_state != TurnState.USER_COMMITTED:
            return Claim(f"the turn is {conversation.turn_state}")
        newest = _newest_messages(conversation)
        if _latest_user_seq(conversation, newest) != user_seq:
            return Claim("a later message took over")
        conversation.meta = _marked(conversation.meta, user_seq)
        try:
            turns.move(conversation, TurnState.AI_GENERATING, f"answering #{user_seq}", also=("meta",))
        except turns.TransitionRefused:
            return Claim("another worker claimed it")
        publish_on_commit(conversation.pk, [turn_event(TurnState.AI_GENERATING)])
        return Claim("claimed", conversation, newest)


def _marked(meta: dict[str, Any], user_seq: int) -> dict[str, Any]:
    """`meta` with the claim's marker: which message is being answered, since when."""
    return {**meta, "generation": {"user_seq": user_seq, "started": time.time()}}


def _mark(conversation: Conversation, user_seq: int) -> None:
    conversation.meta = _marked(conversation.meta, user_seq)
    conversation.save(update_fields=["meta", "updated_at"])


# --- Grounding -------------------------------------------------------------------------------


def _user_message(conversation: Conversation, user_seq: int) -> Message | None:
    return (
        Message.objects.filter(conversation=conversation, direction=Message.Direction.IN, seq__lte=user_seq)
        .order_by("-seq")
        .first()
    )


def _as_history(newest_first: list[Message]) -> tuple[ChatTurn, ...]:
    return tuple(
        ChatTurn(role="user" if m.direction == Message.Direction.IN else "assistant", content=m.text)
        for m in reversed(newest_first)
        if m.text
    )


def _as_texts(newest_first: list[Message]) -> list[str]:
    return [m.text for m in reversed(newest_first) if m.text]


def _history(conversation: Conversation, before_seq: int) -> tuple[ChatTurn, ...]:
    earlier = Message.objects.filter(conversation=conversation, seq__lt=before_seq, seq__isnull=False).order_by("-seq")
    return _as_history(list(earlier[:HISTORY_LIMIT]))


def _earlier_user_texts(conversation: Conversation, before_seq: int) -> list[str]:
    earlier = Message.objects.filter(
        conversation=conversation, direction=Message.Direction.IN, seq__lt=before_seq, seq__isnull=False
    ).order_by("-seq")[:EARLIER_TEXTS]
    return _as_texts(list(earlier))


def _context(
    conversation: Conversation, user_seq: int, newest: list[Message] | None = None
) -> tuple[Message | None, tuple[ChatTurn, ...], list[str]]:
    """The visitor's message, the history before it and the visitor's earlier texts: in the
    usual case (the message is the last one at `user_seq`) one read of the latest rows instead
    of three queries over them (the ORM's cost per query is most of an answer's start). The
    claim's read of the newest messages serves when nothing after `user_seq` pushed older ones
    out of it."""
    window = [m for m in newest if m.seq is not None and m.seq <= user_seq] if newest is not None else []
    if newest is None or (len(window) < len(newest) and len(newest) > HISTORY_LIMIT):
        window = list(
            Message.objects.filter(conversation=conversation, seq__lte=user_seq, seq__isnull=False).order_by("-seq")[
                : HISTORY_LIMIT + 1
            ]
        )
    if not window or window[0].direction != Message.Direction.IN:
        message = _user_message(conversation, user_seq)
        seq = message.seq if message and message.seq else None
        return message, _history(conversation, seq or user_seq + 1), _earlier_user_texts(conversation, seq or user_seq)
    message, before = window[0], window[1:]
    visitor = [m for m in before if m.direction == Message.Direction.IN][:EARLIER_TEXTS]
    if len(visitor) < EARLIER_TEXTS and len(window) > HISTORY_LIMIT:
        # The visitor's earlier texts lie further back than the history reaches.
        return message, _as_history(before), _earlier_user_texts(conversation, message.seq or user_seq)
    return message, _as_history(before), _as_texts(visitor)


def _products_named(answer: str, products: tuple[ScoredProduct, ...]) -> list[ScoredProduct]:
    """The products the answer is about: those it names; all retrieved ones if it names none
    (a model may paraphrase)."""
    lowered = answer.lower()
    named = [scored for scored in products if scored.product["name"].lower() in lowered]
    return named or list(products)


def _plan(claim: Claim, user_seq: int) -> Plan:
    conversation = claim.conversation
    assert conversation is not None, "only a claimed turn is planned"
    (brand,) = bulk.instances(Brand, Brand._meta.concrete_fields, where_in={"id": [conversation.brand_id]})
    message, history, earlier = _context(conversation, user_seq, claim.latest)
    payload = message.payload if message is not None else {}
    text = str(payload.get("content") or (message.text if message else ""))
    # Short replies ("ok", "berapa?") keep the language the conversation was in.
    language = detect_language(text, default=detect_language(" ".join(earlier)) if earlier else "en")
    products: tuple[ScoredProduct, ...] = tuple(retrieve(brand.pk, text, PRODUCT_LIMIT)) if text else ()
    if not products and earlier:
        # A follow-up ("how much is it?") is about what the conversation was about.
        products = tuple(retrieve(brand.pk, " ".join([text, *earlier]), PRODUCT_LIMIT))
    request = GenerationRequest(
        brand_name=brand.name,
        user_text=text,
        history=history,
        language=language,
        voice=bool(payload.get("voice")),
        products=products,
        system_prompt=brand.system_prompt,
    )
    if budget_spent(brand):
        notice = BUDGET_SPENT_MESSAGE.get(language, BUDGET_SPENT_MESSAGE["en"])
        return Plan(
            conversation.pk, user_seq, brand.pk, conversation.channel,
            GenerationRequest(brand_name=brand.name, user_text=text, language=language),
            FixedTextProvider(notice), fallback=False, notice="budget_spent",
        )  # fmt: skip
    provider = provider_for(brand)
    fallback = brand.fallback_to_offline and provider.name != OfflineProvider.name
    return Plan(conversation.pk, user_seq, brand.pk, conversation.channel, request, provider, fallback)


# --- Streaming (one event loop for the whole task) ------------------------------------------------


def _run_stream(plan: Plan) -> list[Attempt]:
    """Stream on this process's streaming loop, or on the streaming process's with
    GENERATION_STREAM_PROCESS (a thread-pool worker: streamer.py says why)."""
    if settings.GENERATION_STREAM_PROCESS:
        attempts: list[Attempt] = streamer.streamer().run(plan)
        return attempts
    return stream_relay.run(_stream(plan))  # type: ignore[no-any-return]


async def _stream(plan: Plan) -> list[Attempt]:
    """Stream on the running streaming loop (relay.run, or the streaming process's); returns once
    every piece is stored in the stream logs and published."""
    relay = stream_relay.relay()
    attempts: list[Attempt] = []
    providers: list[Provider] = [plan.provider]
    if plan.fallback:
        providers.append(OfflineProvider())
    try:
        for number, provider in enumerate(providers, start=1):
            attempt = Attempt(streams.stream_id_for(plan.conversation_id, plan.user_seq, number), provider.name)
            attempts.append(attempt)
            pieces = attempt.pieces
            try:
                async with asyncio.timeout(_total_timeout()):
                    async for piece in provider.stream(plan.request):
                        if piece:
                            relay.put(plan.conversation_id, attempt.stream_id, len(pieces), piece)
                            pieces.append(piece)
            except (ProviderError, TimeoutError) as exc:
                attempt.error = str(exc) or type(exc).__name__
                logger.warning("provider %s failed for %s: %s", provider.name, plan.conversation_id, attempt.error)
                continue
            break
        await relay.drain(plan.conversation_id, [attempt.stream_id for attempt in attempts])
    finally:
        relay.forget(plan.conversation_id, [attempt.stream_id for attempt in attempts])
    return attempts


def _total_timeout() -> float:
    # The read timeout catches a silent model; this catches one that drips forever.
    return float(max(settings.LLM_TIMEOUT_SECONDS * 4, 30))


# --- Storing the answer ----------------------------------------------------------------------


def _answer_payload(plan: Plan, attempt: Attempt, *, final: bool) -> tuple[str, dict[str, Any]]:
    request = plan.request
    suggested = _products_named(attempt.text, request.products) if final else []
    products = [scored.product for scored in suggested]
    confidence = max((scored.score for scored in suggested), default=None) if final else None
    if plan.channel == Channel.ASSISTANT:
        payload: dict[str, Any] = {
            "kind": "BotStreamEnd",
            "streamId": attempt.stream_id,
            "content": attempt.text,
            "products": products,
            "confidence": confidence,
        }
    else:
        payload = {
            "kind": "answer",
            "content": attempt.text,
            "streamId": attempt.stream_id,
            "products": products,
            "confidence": confidence,
            "language": request.language,
            "voice": request.voice,
        }
    if plan.notice and final:
        payload["notice"] = plan.notice
    if attempt.provider != plan.provider.name and final:
        payload["fallback"] = True
    return payload["kind"], payload


def _append(conversation: Conversation, entries: list[tuple[str, dict[str, Any], bool]]) -> list[Message]:
    created = services.number_messages(
        conversation, [(Message.Direction.OUT, kind, payload) for kind, payload, _ in entries]
    )
    for message, (_, _, cut_off) in zip(created, entries, strict=True):
        message.cut_off = cut_off
    bulk.insert_rows(Message, MESSAGE_FIELDS, [[getattr(m, name) for name in STORED_ATTRIBUTES] for m in created])
    return created


# An answer's messages as one plain INSERT (the ORM's bulk_create was an eighth of a store), of
# the fields the inbox writes its messages with.
STORED_ATTRIBUTES = ["conversation_id", *MESSAGE_FIELDS[1:]]


def _after_generation(conversation: Conversation) -> list[tuple[str, dict[str, Any], bool]]:
    """The flow's requests that wait for the generated answer (assistant conversations)."""
    waiting = conversation.meta.get("after_generation") or []
    return [(str(request["kind"]), request, False) for request in waiting]


def _finish_meta(conversation: Conversation) -> None:
    meta = dict(conversation.meta)
    meta.pop("generation", None)
    meta.pop("after_generation", None)
    conversation.meta = meta


def _still_ours(conversation: Conversation, user_seq: int) -> bool:
    current = conversation.meta.get("generation") or {}
    return conversation.turn_state == TurnState.AI_GENERATING and current.get("user_seq") == user_seq


def _store(plan: Plan, attempts: list[Attempt]) -> None:
    done = attempts[-1] if attempts and not attempts[-1].error else None
    stream_ids = [attempt.stream_id for attempt in attempts]
    with transaction.atomic():
        conversation = services.lock_conversation(plan.conversation_id)
        if not _still_ours(conversation, plan.user_seq):
            # The sweeper ended the turn meanwhile and the visitor was told; storing now would
            # contradict what they saw.
            logger.warning("answer for %s #%s came too late; dropped", plan.conversation_id, plan.user_seq)
            transaction.on_commit(lambda: streams.forget(plan.conversation_id, plan.user_seq, stream_ids))
            return
        entries: list[tuple[str, dict[str, Any], bool]] = []
        for attempt in attempts:
            if attempt is done:
                kind, payload = _answer_payload(plan, attempt, final=True)
                entries.append((kind, payload, False))
            elif attempt.pieces:
                kind, payload = _answer_payload(plan, attempt, final=False)
                entries.append((kind, payload, True))
        is_assistant = conversation.channel == Channel.ASSISTANT
        if is_assistant:
            entries += _after_generation(conversation)
        stored = _append(conversation, entries)
        _finish_meta(conversation)
        events: list[Event] = [message_event(message) for message in stored]
        publish_on_commit(conversation.pk, events)
        if done is not None:
            turns.move_through(
                conversation, [TurnState.AI_COMMITTED, TurnState.IDLE], "answer stored", also=("last_seq", "meta")
            )
            publish_on_commit(conversation.pk, [turn_event(TurnState.IDLE, "answer stored")])
        else:
            conversation.save(update_fields=["last_seq", "meta", "updated_at"])
            reasons = "provider failed: " + "; ".join(attempt.error for attempt in attempts)
            services.conversation_fail(conversation.pk, reasons[:300], visitor_message=FAILED_MESSAGE)
        if is_assistant:
            _continue_flow_on_commit(conversation.pk)
        tokens = sum(len(a.pieces) for a in attempts if a.provider == plan.provider.name)
        if not plan.notice:
            record_usage(plan.brand_id, tokens)
        transaction.on_commit(lambda: streams.forget(plan.conversation_id, plan.user_seq, stream_ids))


def _continue_flow_on_commit(conversation_id: Any) -> None:
    """The assistant's inbox waited for this answer; let it go on (a broker that is down leaves it
    to the sweeper instead of failing the commit)."""
    task_queue.enqueue_on_commit("advance_flows", [str(conversation_id)])


# --- A redelivery after a worker died mid-answer -------------------------------------------------


def _wait_for_first_run(conversation_id: Any, user_seq: int) -> bool:
    """True if the first run is gone (its heartbeat expired); False if it is still streaming."""
    deadline = time.monotonic() + 3 * streams.heartbeat_seconds()
    while streams.is_alive(conversation_id, user_seq):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _recover(conversation_id: Any, user_seq: int) -> None:
    if not _wait_for_first_run(conversation_id, user_seq):
        logger.info("generation for %s #%s is still alive elsewhere; leaving it", conversation_id, user_seq)
        return
    stream_ids = [streams.stream_id_for(conversation_id, user_seq, attempt) for attempt in (1, 2)]
    with transaction.atomic():
        conversation = services.lock_conversation(conversation_id)
        if not _still_ours(conversation, user_seq):
            return
        entries: list[tuple[str, dict[str, Any], bool]] = []
        for stream_id in stream_ids:
            text = "".join(streams.read_tokens(conversation_id, stream_id))
            if text:
                entries.append(_cut_off_entry(conversation, stream_id, text))
        if conversation.channel == Channel.ASSISTANT:
            entries += _after_generation(conversation)
            _continue_flow_on_commit(conversation.pk)
        stored = _append(conversation, entries)
        _finish_meta(conversation)
        conversation.save(update_fields=["last_seq", "meta", "updated_at"])
        publish_on_commit(conversation.pk, [message_event(message) for message in stored])
        services.conversation_fail(conversation.pk, "worker lost mid-answer", visitor_message=INTERRUPTED_MESSAGE)
        transaction.on_commit(lambda: streams.forget(conversation_id, user_seq, stream_ids))
    logger.warning("generation for %s #%s was interrupted; kept %d partial piece(s)", conversation_id, user_seq,
                   len(entries))  # fmt: skip


def _cut_off_entry(conversation: Conversation, stream_id: str, text: str) -> tuple[str, dict[str, Any], bool]:
    if conversation.channel == Channel.ASSISTANT:
        payload: dict[str, Any] = {"kind": "BotStreamEnd", "streamId": stream_id, "content": text, "products": [],
                                   "confidence": None}  # fmt: skip
    else:
        payload = {"kind": "answer", "content": text, "streamId": stream_id, "products": [], "confidence": None,
                   "language": detect_language(text), "voice": False}  # fmt: skip
    return payload["kind"], payload, True

"""The brand chat WebSocket (`/ws/chat/{brand_id}`): the seed's envelope `{"type", "data"}`.

The consumer parses and checks a frame, stores the visitor's message through
`services.accept_visitor_messages` (batched with the other sockets' messages of the process) and
leaves the answer to a worker. The worker
publishes `stream.delta` events while the answer is written and a `message` event once it is
stored; `conversation_events` renders them as the seed's `chunk` and `complete` messages. The
chunks sent for an answer always join to the stored answer: a delta lost on the way is re-read
from the worker's stream log, and whatever is still missing when the answer is stored is sent as
one last chunk before `complete`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from django.conf import settings

from conversations import selectors, services
from conversations.events import message_event, stream_pieces
from conversations.generation import streams
from conversations.models import Channel, Conversation, Message
from conversations.protocols.batching import PerLoop
from conversations.protocols.common import (
    ConversationConsumer,
    NulCharacter,
    RateLimiter,
    db_async,
    header,
    late_replies,
    loads_json,
    visitor_rate_allows,
)
from conversations.publish import group_name
from conversations.services import VisitorMessage
from flows.models import Brand
from flows.selectors import active_brand

logger = logging.getLogger(__name__)

ID_MAX = 200
RATE_WINDOW = 60.0
# How long to wait for live events before reading the answer from the log.
WATCH_SECONDS = 5.0
# Frames of any type (pings, bad input) a connection may send per window before it is told to
# slow down: far beyond a person, far below a flood.
FRAME_LIMIT = 120
UNKNOWN_CONVERSATION = "Unknown conversation_id: send null to start a new conversation"


# --- Parsing: a pure function from a frame to a request or an error ---------------------------


@dataclass(frozen=True)
class ChatRequest:
    message: str
    conversation_id: str | None
    user_id: str | None
    voice: bool


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class BadInput:
    message: str


def parse_frame(raw: str | bytes | None, max_length: int) -> ChatRequest | Ping | BadInput:
    """Validate one client frame against the seed's two message types."""
    if raw is None:
        return BadInput("Empty message")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BadInput("Messages must be UTF-8 JSON text")
    if len(raw) > settings.MAX_FRAME_BYTES:
        return BadInput(f"Message too long: frames are limited to {settings.MAX_FRAME_BYTES} bytes")
    try:
        frame = loads_json(raw)
    except NulCharacter:
        return BadInput("Text must not contain NUL characters")
    except (ValueError, RecursionError):
        return BadInput("Invalid JSON")
    if not isinstance(frame, dict):
        return BadInput('Messages must be JSON objects like {"type": "chat", "data": {...}}')
    kind = frame.get("type")
    if not isinstance(kind, str):
        return BadInput('`type` must be a string: "chat" or "ping"')
    data = frame.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return BadInput("`data` must be an object")
    if kind == "ping":
        return Ping()
    if kind != "chat":
        return BadInput(f'Unknown message type {kind[:40]!r}: send "chat" or "ping"')
    message = data.get("message")
    if not isinstance(message, str):
        return BadInput("`data.message` is required and must be a string")
    if not message.strip():
        return BadInput("`data.message` must not be empty")
    if len(message) > max_length:
        return BadInput(f"Message too long: at most {max_length} characters")
    conversation_id = data.get("conversation_id")
    if conversation_id is not None and (not isinstance(conversation_id, str) or len(conversation_id) > ID_MAX):
        return BadInput("`data.conversation_id` must be a string or null")
    user_id = data.get("user_id")
    if isinstance(user_id, bool) or (user_id is not None and not isinstance(user_id, str | int)):
        return BadInput("`data.user_id` must be a string or null")
    if user_id is not None:
        user_id = str(user_id)
        if len(user_id) > ID_MAX:
            return BadInput(f"`data.user_id` is longer than {ID_MAX} characters")
    voice = data.get("voice", False)
    if voice is None:
        voice = False
    if not isinstance(voice, bool):
        return BadInput("`data.voice` must be a boolean")
    return ChatRequest(message=message.strip(), conversation_id=conversation_id or None, user_id=user_id or None,
                       voice=voice)  # fmt: skip


# --- Server messages (the seed's shapes) ------------------------------------------------------


def welcome_message(brand: Brand) -> dict[str, Any]:
    return {
        "type": "welcome",
        "data": {"message": brand.welcome_text, "brand_id": brand.slug, "brand_name": brand.name},
    }


def error_message(text: str) -> dict[str, Any]:
    return {"type": "error", "data": {"message": text}}


def pong_message() -> dict[str, Any]:
    return {"type": "pong", "data": {"timestamp": datetime.now().replace(microsecond=0).isoformat()}}


def chunk_message(content: str, conversation_id: str) -> dict[str, Any]:
    return {
        "type": "chunk",
        "data": {
            "content": content,
            "is_final": False,
            "conversation_id": conversation_id,
            "suggested_products": None,
            "confidence_score": None,
        },
    }


def chunk_frame_parts(conversation_id: str) -> tuple[str, str]:
    """`json.dumps(chunk_message(content, conversation_id))` is `head + encode_basestring(content)
    + tail`: a streamed token then costs one string escape, not a dict and an encoder pass."""
    head, tail = json.dumps(chunk_message("\x00", conversation_id), ensure_ascii=False).split('"\\u0000"')
    return head, tail


def complete_message(payload: dict[str, Any], conversation_id: str) -> dict[str, Any]:
    confidence = payload.get("confidence")
    return {
        "type": "complete",
        "data": {
            "content": "",
            "is_final": True,
            "conversation_id": conversation_id,
            "suggested_products": list(payload.get("products") or []),
            "confidence_score": float(confidence) if isinstance(confidence, int | float) else None,
        },
    }


# --- Database access for the consumer ---------------------------------------------------------


@db_async
def _load_brand(slug: str) -> Brand | None:
    return active_brand(slug)


@db_async
def _may_follow(brand: Brand, conversation_id: uuid.UUID) -> bool:
    """Whether the socket may continue this conversation (checked before it hears its events)."""
    conversation = selectors.conversation_by_id(conversation_id, channel=Channel.BRAND_CHAT)
    return conversation is not None and conversation.brand_id == brand.pk and conversation.ended_at is None


@db_async
def _answer_after(conversation_id: Any, user_seq: int) -> tuple[Message | None, str, str]:
    """The stored answer to message `user_seq`, if there is one, and the turn state."""
    answer = (
        Message.objects.filter(conversation_id=conversation_id, seq__gt=user_seq, direction=Message.Direction.OUT)
        .order_by("seq")
        .first()
    )
    state = Conversation.objects.filter(pk=conversation_id).values_list("turn_state", "last_error").first()
    return answer, (state[0] if state else ""), (state[1] if state else "")


# The messages of all the sockets of a process are stored in batches (group commit): a hundred
# visitors asking at once cost a few transactions, not two hundred.
_accept = PerLoop(db_async(services.accept_visitor_messages))


def _visitor_message(brand: Brand, request: ChatRequest, conversation_id: uuid.UUID, opens: bool) -> VisitorMessage:
    extra: dict[str, Any] = {"voice": request.voice}
    if request.user_id:
        extra["user_id"] = request.user_id
    return VisitorMessage(
        conversation_id, request.message, kind="chat", extra=extra, opens=opens, brand_id=brand.pk,
        channel=Channel.BRAND_CHAT, user_id=request.user_id or "",
    )  # fmt: skip


async def _stream_log(conversation_id: Any, stream_id: str) -> list[str]:
    """The pieces the worker wrote so far (empty when unavailable)."""
    try:
        return await streams.read_tokens_async(conversation_id, stream_id)
    except Exception:
        logger.warning("could not re-read stream %s", stream_id, exc_info=True)
        return []


# --- The consumer ------------------------------------------------------------------------------


class BrandChatConsumer(ConversationConsumer):
    brand: Brand | None
    conversation_id: Any
    # stream id → the text sent so far as chunks, and whether it is still in order
    sent: dict[str, str]
    next_index: dict[str, int]
    finished: set[str]  # streams whose stored answer was sent: later deltas are stale
    last_seq: int
    group: str
    chunk_parts: tuple[str, str]

    async def connect(self) -> None:
        self.brand = None
        self.conversation_id = None
        self.group = ""
        self.sent, self.next_index, self.last_seq, self.finished = {}, {}, 0, set()
        slug = self.scope["url_route"]["kwargs"]["brand_id"]
        brand = await _load_brand(slug)
        await self.accept()
        if brand is None:
            await self._send(error_message(f"Brand '{slug[:100]}' not found or inactive"))
            await self.close(code=4404)
            return
        if not brand.allows_origin(header(self.scope, b"origin")):
            await self._send(error_message("This website is not allowed to use this chat"))
            await self.close(code=4403)
            return
        self.brand = brand
        self.message_limiter = RateLimiter(brand.rate_limit_per_minute, RATE_WINDOW)
        self.frame_limiter = RateLimiter(FRAME_LIMIT, RATE_WINDOW)
        await self._send(welcome_message(brand))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        brand = self.brand
        if brand is None:
            return
        if not self.frame_limiter.allow():
            await self._send(error_message("Too many messages: please slow down"))
            return
        parsed = parse_frame(text_data if text_data is not None else bytes_data, brand.max_message_length)
        if isinstance(parsed, BadInput):
            await self._send(error_message(parsed.message))
        elif isinstance(parsed, Ping):
            await self._send(pong_message())
        else:
            await self._chat(brand, parsed)

    async def _chat(self, brand: Brand, request: ChatRequest) -> None:
        if not await self._rate_allows(brand, request):
            limit = brand.rate_limit_per_minute
            await self._send(error_message(f"Rate limit exceeded: at most {limit} messages a minute. Please wait."))
            return
        opens = request.conversation_id is None
        try:
            conversation_id = uuid.uuid4() if opens else uuid.UUID(str(request.conversation_id))
        except ValueError:
            conversation_id = None
        if conversation_id is None or (
            not opens and conversation_id != self.conversation_id and not await _may_follow(brand, conversation_id)
        ):
            await self._send(error_message(UNKNOWN_CONVERSATION))
            return
        # Join before the message is stored: the worker's first delta must find us listening.
        await self._follow(conversation_id)
        accepted = await _accept.submit(_visitor_message(brand, request, conversation_id, opens))
        if isinstance(accepted, services.Busy):
            await self._send(error_message("Still answering your previous message: wait for it to complete"))
        elif isinstance(accepted, services.UnknownConversation):
            await self._send(error_message(UNKNOWN_CONVERSATION))  # it ended since it was followed
        else:
            self._watch(accepted.seq or 0)

    def _watch(self, user_seq: int) -> None:
        """Events can be lost (a Redis restart, a backlog past the channel layer's expiry); the
        log cannot. If the answer has not arrived after a while, read it from the log."""
        conversation_id = self.conversation_id

        async def check() -> bool:
            if self.conversation_id != conversation_id or self.last_seq > user_seq:
                return False
            answer, state, error = await _answer_after(conversation_id, user_seq)
            if answer is not None:
                await self._stored(dict(message_event(answer)))
                return False
            if state == "error":
                await self._send(error_message(error or "Sorry, the answer failed. Please try again."))
                return False
            return True

        late_replies().watch(self, WATCH_SECONDS, check)

    async def _rate_allows(self, brand: Brand, request: ChatRequest) -> bool:
        if not self.message_limiter.allow():
            return False
        if request.user_id is None:
            return True
        allowed = await db_async(visitor_rate_allows)(
            "brandchat", brand.pk, request.user_id, brand.rate_limit_per_minute
        )
        if not allowed:
            self.message_limiter.events.pop()  # a refused message costs nothing
        return bool(allowed)

    async def _follow(self, conversation_id: Any) -> None:
        if self.conversation_id == conversation_id:
            return
        if self.conversation_id is not None:
            await self.channel_layer.group_discard(group_name(self.conversation_id), self.channel_name)
        self.conversation_id = conversation_id
        self.group = group_name(conversation_id)
        self.chunk_parts = chunk_frame_parts(str(conversation_id))
        self.sent, self.next_index, self.last_seq, self.finished = {}, {}, 0, set()
        await self.channel_layer.group_add(group_name(conversation_id), self.channel_name)

    # --- Events from the worker --------------------------------------------------------------

    async def conversation_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            kind = event["type"]
            if kind == "stream.delta":
                # One event carries pieces of many conversations; one chunk per piece of ours.
                for stream_id, index, piece in stream_pieces(event, self.group):
                    await self._delta(stream_id, index, piece)
            elif kind == "message":
                await self._stored(event)
            elif kind == "error" and event.get("reply_to") in (None, self.channel_name):
                await self._send(error_message(event["message"]))

    async def _delta(self, stream_id: str, index: int, delta: str) -> None:
        if stream_id in self.finished:
            return  # the stored answer was sent already (the watchdog read it while these queued)
        expected = self.next_index.get(stream_id, 0)
        if index < expected:
            return  # already sent (a re-read after a gap covered it)
        text = delta
        if index > expected:
            pieces = await _stream_log(self.conversation_id, stream_id)
            if len(pieces) < index:
                return  # cannot fill the gap now; the stored answer will
            text = "".join(pieces[expected:index]) + delta
        self.next_index[stream_id] = index + 1
        self.sent[stream_id] = self.sent.get(stream_id, "") + text
        head, tail = self.chunk_parts
        await self.send(text_data=head + encode_basestring(text) + tail)

    async def _stored(self, event: dict[str, Any]) -> None:
        payload = event.get("payload") or {}
        if event.get("direction") != Message.Direction.OUT or payload.get("kind") != "answer":
            return
        if event["seq"] <= self.last_seq:
            return
        self.last_seq = event["seq"]
        content = str(payload.get("content") or "")
        stream_id = str(payload.get("streamId") or "")
        sent = self.sent.pop(stream_id, "")
        self.next_index.pop(stream_id, None)
        self.finished.add(stream_id)
        if content.startswith(sent) and len(content) > len(sent):
            await self._send(chunk_message(content[len(sent) :], str(self.conversation_id)))
        elif not content.startswith(sent):
            logger.warning("chunks sent for %s differ from the stored answer", stream_id)
        if not event.get("cut_off"):
            await self._send(complete_message(payload, str(self.conversation_id)))

    async def _send(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))

"""The bot-assistant WebSocket (`/ws/assistant/{brand_id}/`): the seed's messages, no envelope.

The consumer only parses, stores and enqueues; a worker advances the flow and publishes the
bot's requests to the conversation's group, and `conversation_events` renders them here.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from conversations import inbox, selectors, services
from conversations.events import stream_pieces
from conversations.inbox import InputResult, PendingInput
from conversations.models import Channel, Message
from conversations.protocols.batching import PerLoop
from conversations.protocols.common import (
    ConversationConsumer,
    NulCharacter,
    RateLimiter,
    cookie,
    db_async,
    header,
    is_secure,
    late_replies,
    loads_json,
    query_param,
)
from conversations.publish import group_name
from flows.models import Brand
from flows.selectors import active_brand

COOKIE_NAME = "Fluvio-Bot-Assistant"
SID_PATTERN = re.compile(r"^[0-9a-f]{40}$")
ID_MAX = 200
# A person clicks and types; a flood is anything far beyond that.
RATE_LIMIT, RATE_WINDOW = 20, 10.0
# After an input, how long to wait for live events before reading the log, and how often.
WATCH_SECONDS, WATCH_ROUNDS = 5.0, 12
CLIENT_KINDS = frozenset({"ChoiceResponse", "UserText", "ResetSession"})


# --- Parsing: a pure function from a frame to a client message or an error --------------------


@dataclass(frozen=True)
class ProtocolError:
    code: str
    message: str

    def as_wire(self) -> dict[str, Any]:
        return {"kind": "Error", "code": self.code, "message": self.message}


@dataclass(frozen=True)
class ClientMessage:
    kind: str
    payload: dict[str, Any]
    client_id: str | None


def _string(data: dict[str, Any], key: str, *, required: bool, limit: int) -> str | ProtocolError | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        return ProtocolError("invalid", f"`{key}` must be a string")
    if required and not value.strip():
        return ProtocolError("invalid", f"`{key}` must not be empty")
    if len(value) > limit:
        return ProtocolError("too_long", f"`{key}` is longer than {limit} characters")
    return value


def parse_client_message(raw: str | bytes | None, max_text: int) -> ClientMessage | ProtocolError:
    """Validate one frame. Every failure is a ProtocolError with one of the documented codes."""
    if raw is None:
        return ProtocolError("bad_json", "empty frame")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ProtocolError("bad_json", "frames must be UTF-8 JSON text")
    if len(raw) > settings.MAX_FRAME_BYTES:
        return ProtocolError("too_long", f"frames are limited to {settings.MAX_FRAME_BYTES} bytes")
    try:
        data = loads_json(raw)
    except NulCharacter:
        return ProtocolError("invalid", "text must not contain NUL characters")
    except (ValueError, RecursionError):
        return ProtocolError("bad_json", "the frame is not valid JSON")
    if not isinstance(data, dict):
        return ProtocolError("invalid", "a message must be a JSON object with a `kind`")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in CLIENT_KINDS:
        shown = kind if isinstance(kind, str) else json.dumps(kind)
        return ProtocolError(
            "unknown_kind", f"unknown kind {shown[:60]!r}; send ChoiceResponse, UserText or ResetSession"
        )
    client_id = _string(data, "clientId", required=False, limit=100)
    if isinstance(client_id, ProtocolError):
        return client_id
    payload: dict[str, Any] = {"kind": kind}
    if kind == "ChoiceResponse":
        for key in ("groupId", "itemId"):
            value = _string(data, key, required=True, limit=ID_MAX)
            if isinstance(value, ProtocolError):
                return value
            payload[key] = value
        content = _string(data, "content", required=False, limit=max_text)
        if isinstance(content, ProtocolError):
            return content
        if content is not None:
            payload["content"] = content
    elif kind == "UserText":
        session_id = _string(data, "sessionId", required=True, limit=ID_MAX)
        if isinstance(session_id, ProtocolError):
            return session_id
        content = _string(data, "content", required=True, limit=max_text)
        if isinstance(content, ProtocolError):
            return content
        payload.update(sessionId=session_id, content=content)
    return ClientMessage(kind=kind, payload=payload, client_id=client_id)


def render_message(message: Message | dict[str, Any]) -> dict[str, Any]:
    """A stored message as the seed's object plus its `seq`."""
    if isinstance(message, Message):
        return {**message.payload, "seq": message.seq}
    return {**message["payload"], "seq": message["seq"]}


# --- Database access for the consumer ---------------------------------------------------------


_brands: dict[str, tuple[float, Brand | None]] = {}
BRAND_CACHE_SECONDS = 5.0


@db_async
def _fetch_brand(slug: str) -> Brand | None:
    return active_brand(slug)


async def _load_brand(slug: str) -> Brand | None:
    """The brand, cached for a few seconds per process: every handshake needs it, and a staff
    change (deactivation, origins) may take that long to apply."""
    now = time.monotonic()
    cached = _brands.get(slug)
    if cached is not None and cached[0] > now:
        return cached[1]
    brand = await _fetch_brand(slug)
    if len(_brands) > 1000:
        _brands.clear()
    _brands[slug] = (now + BRAND_CACHE_SECONDS, brand)
    return brand


@db_async
def _find_conversation(brand: Brand, sid: str) -> Any:
    found = selectors.open_conversation_for_visitor(brand.pk, Channel.ASSISTANT, services.visitor_key_for(sid))
    if found is None:
        return None
    services.assistant_resume(found)
    return found.pk


# Handshakes and inputs of all the sockets of a process are written in batches (group commit).
_open_conversations = PerLoop(db_async(services.assistant_conversations_open))
_store_inputs = PerLoop(db_async(inbox.queue_inputs))


@db_async
def _messages_after(conversation_id: Any, after: int) -> list[tuple[dict[str, Any], bool]]:
    return [
        (render_message(m), m.direction == Message.Direction.IN)
        for m in selectors.messages_after(conversation_id, after)
    ]


class AssistantConsumer(ConversationConsumer):
    brand: Brand
    conversation_id: Any
    last_sent: int

    async def connect(self) -> None:
        self.conversation_id = None
        brand = await _load_brand(self.scope["url_route"]["kwargs"]["brand_id"])
        if brand is None:
            await self.accept()
            await self._send(ProtocolError("not_found", "Brand not found or inactive").as_wire())
            await self.close(code=4404)
            return
        if not brand.allows_origin(header(self.scope, b"origin")):
            await self.accept()
            await self._send(ProtocolError("forbidden_origin", "This site may not use this assistant").as_wire())
            await self.close(code=4403)
            return
        self.brand = brand
        self.limiter = RateLimiter(RATE_LIMIT, RATE_WINDOW)
        sid = query_param(self.scope, "sid") or cookie(self.scope, COOKIE_NAME)
        conversation_id = await _find_conversation(brand, sid) if sid and SID_PATTERN.match(sid) else None
        is_new = conversation_id is None
        if is_new:
            # An unknown or forged value starts a new conversation under a new sid. Join its group
            # before it exists, so that nothing its first flow step publishes can be missed.
            new_sid, conversation_id = secrets.token_hex(20), uuid.uuid4()
            sid = new_sid
        await self._join(conversation_id)
        if is_new:
            await _open_conversations.submit((brand, services.visitor_key_for(new_sid), conversation_id))
        attributes = f"{COOKIE_NAME}={sid}; Path=/; Max-Age=31536000; SameSite=Lax"
        if is_secure(self.scope):
            attributes += "; Secure"
        await self.accept(headers=[(b"set-cookie", attributes.encode("latin1"))])
        await self._send({"kind": "Session", "sid": sid})
        after = query_param(self.scope, "after")
        self.last_sent = int(after) if after and after.isdigit() else 0
        if not is_new:
            await self._catch_up(replay=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation_id is None:
            return
        if not self.limiter.allow():
            await self._send(ProtocolError("rate_limited", "Too many messages; slow down").as_wire())
            return
        parsed = parse_client_message(text_data if text_data is not None else bytes_data, self.brand.max_message_length)
        if isinstance(parsed, ProtocolError):
            await self._send(parsed.as_wire())
            return
        if parsed.kind == "ResetSession":
            conversation = await db_async(services.assistant_reset)(self.conversation_id)
            await self.channel_layer.group_discard(group_name(self.conversation_id), self.channel_name)
            await self._join(conversation.pk)
            self.last_sent = 0
            await self._catch_up()
            return
        result = await _store_inputs.submit(
            PendingInput(self.conversation_id, parsed.payload, parsed.client_id, self.channel_name)
        )
        if result is InputResult.BUSY:
            await self._send(ProtocolError("busy", "Still working on your previous answers").as_wire())
        else:
            self._watch()

    async def conversation_events(self, message: dict[str, Any]) -> None:
        """Events from the conversation's group, rendered as the seed's messages."""
        for event in message["events"]:
            kind = event["type"]
            if kind == "message":
                if event["seq"] <= self.last_sent:
                    continue
                if event["seq"] > self.last_sent + 1:
                    await self._catch_up()  # something was missed: the log has it
                    continue
                self.last_sent = event["seq"]
                if event["direction"] == Message.Direction.OUT:
                    await self._send(render_message(event))
            elif kind == "stream.delta":
                # One event carries pieces of many conversations; one BotStream per piece of ours.
                for stream_id, _, piece in stream_pieces(event, group_name(self.conversation_id)):
                    await self._send({"kind": "BotStream", "streamId": stream_id, "delta": piece})
            elif kind == "error" and event.get("reply_to") in (None, self.channel_name):
                await self._send(ProtocolError(event["code"], event["message"]).as_wire())

    async def _join(self, conversation_id: Any) -> None:
        self.conversation_id = conversation_id
        await self.channel_layer.group_add(group_name(conversation_id), self.channel_name)

    async def _catch_up(self, *, replay: bool = False) -> None:
        """Send what the log has after `last_sent`. The visitor's own answers are part of a replay
        on connect, but never echoed while the socket is live (the seed client drew them)."""
        for rendered, inbound in await _messages_after(self.conversation_id, self.last_sent):
            if rendered["seq"] <= self.last_sent:
                continue  # a live event delivered it while we were reading
            self.last_sent = rendered["seq"]
            if replay or not inbound:
                await self._send(rendered)

    def _watch(self) -> None:
        """If nothing new arrives for a while after an input, read the log (`LateReplies`)."""
        conversation_id, seen, rounds = self.conversation_id, self.last_sent, WATCH_ROUNDS

        async def check() -> bool:
            nonlocal rounds
            if self.conversation_id != conversation_id or self.last_sent > seen:
                return False
            await self._catch_up()
            rounds -= 1
            return rounds > 0

        late_replies().watch(self, WATCH_SECONDS, check)

    async def _send(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))

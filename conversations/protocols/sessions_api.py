"""HTTP + Server-Sent Events chat sessions (the fsm-chatbot seed), a thin adapter.

- `POST /sessions/{user_id}/messages` stores the visitor's message (the turn moves idle →
  user_writing → user_committed) and a worker generates the answer; 409 while a turn is under way.
- `GET /sessions/{session_id}/stream` renders the conversation's events as SSE `token`,
  `message_end`, `commit_done` (or `error`). It joins the conversation's group first, then reads
  what is already stored or streamed, so a stream opened late still delivers the whole answer.
- `GET /sessions/{session_id}` is the session and its transcript.

A session is a Conversation with channel "sessions"; its id is the session id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Q
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from conversations import services, turns
from conversations.events import stream_pieces
from conversations.generation import streams
from conversations.generation.providers import split_words
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.protocols.common import visitor_rate_allows
from conversations.publish import group_name
from flows.models import Brand

logger = logging.getLogger(__name__)

DEFAULT_BRAND_SLUG = "techpro"
# Seconds between SSE comments on a quiet stream (keeps proxies from closing it); each one also
# re-reads the stored state in case an event was lost.
KEEPALIVE_SECONDS = 10.0
RECEIVED_TEXT = "Message received. Connect to /sessions/{session_id}/stream for response."
ANSWER_KINDS = frozenset({"answer", "BotStreamEnd"})
GENERIC_ERROR = "Sorry, something went wrong. Please send your message again."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF errors as JSON with an `error` text, always (`detail` keeps DRF's own shape)."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"]), **response.data}
    elif isinstance(exc, ValidationError):
        response.data = {"error": _first_message(response.data), "detail": response.data}
    return response


def _first_message(data: Any) -> str:
    if isinstance(data, dict):
        for key, value in data.items():
            return f"{key}: {_first_message(value)}" if key != "non_field_errors" else _first_message(value)
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


class Busy(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The session is still answering the previous message."
    default_code = "busy"


# --- Reads ------------------------------------------------------------------------------------


def _default_brand() -> Brand | None:
    brands = Brand.objects.filter(is_active=True)
    return brands.filter(slug=DEFAULT_BRAND_SLUG).first() or brands.order_by("pk").first()


def _session(session_id: str) -> Conversation | None:
    try:
        pk = uuid.UUID(session_id)
    except ValueError:
        return None  # a malformed id is an unknown session
    return Conversation.objects.select_related("brand").filter(pk=pk, channel=Channel.SESSIONS).first()


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def session_json(conversation: Conversation) -> dict[str, Any]:
    messages = Message.objects.filter(conversation=conversation, seq__isnull=False).order_by("seq")
    return {
        "session": {
            "id": str(conversation.pk),
            "user_id": conversation.user_id,
            "state": conversation.turn_state,
            "messages": [
                {
                    "id": f"msg-{message.seq}",
                    "role": "user" if message.direction == Message.Direction.IN else "assistant",
                    "content": message.text,
                    "timestamp": _iso(message.created_at),
                }
                for message in messages
            ],
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
        }
    }


# --- JSON endpoints ---------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string only: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class MessageIn(serializers.Serializer):
    user_id = StrictCharField(max_length=200, required=False)
    message = StrictCharField(trim_whitespace=False)
    session_id = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=100)
    brand_id = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=100)

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("must not be empty")
        return value


class MessageOut(serializers.Serializer):
    session_id = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField()


SESSION_SCHEMA = inline_serializer(
    "SessionOut",
    {
        "session": inline_serializer(
            "Session",
            {
                "id": serializers.CharField(),
                "user_id": serializers.CharField(),
                "state": serializers.ChoiceField(choices=TurnState.values),
                "messages": inline_serializer(
                    "SessionMessage",
                    {
                        "id": serializers.CharField(),
                        "role": serializers.ChoiceField(choices=["user", "assistant"]),
                        "content": serializers.CharField(),
                        "timestamp": serializers.DateTimeField(),
                    },
                    many=True,
                ),
                "created_at": serializers.DateTimeField(),
                "updated_at": serializers.DateTimeField(),
            },
        )
    },
)
ERROR_SCHEMA = inline_serializer("Error", {"error": serializers.CharField(), "detail": serializers.JSONField()})


class SessionMessages(APIView):
    @extend_schema(
        operation_id="sessions_send_message",
        summary="Send a message",
        description="Without `session_id` a new session starts. The answer streams on "
        "`GET /sessions/{session_id}/stream` (Server-Sent Events, `text/event-stream`): `event: token` "
        "(one `data:` line per line of the token), `event: message_end`, then `event: commit_done` with "
        "the session id as data, or `event: error` with a message. A stream opened late still delivers "
        "the whole answer; opened with nothing under way it delivers the last answer again and commits.",
        request=MessageIn,
        responses={
            200: MessageOut,
            400: OpenApiResponse(ERROR_SCHEMA, description="Invalid input or message too long"),
            404: OpenApiResponse(ERROR_SCHEMA, description="Unknown session or brand"),
            409: OpenApiResponse(ERROR_SCHEMA, description="The session is still answering"),
            429: OpenApiResponse(ERROR_SCHEMA, description="Too many messages from this user (brand's rate limit)"),
        },
    )
    def post(self, request: Request, user_id: str) -> Response:
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        if "\x00" in user_id:
            raise ValidationError({"user_id": ["must not contain NUL characters"]})
        if body.get("user_id") and body["user_id"] != user_id:
            raise ValidationError({"user_id": ["must match the user id in the path"]})
        session_id = body.get("session_id") or ""
        brand_slug = body.get("brand_id") or ""
        existing: Conversation | None = None
        if session_id:
            existing = _session(session_id)
            if existing is None or existing.user_id != user_id or existing.ended_at is not None:
                raise NotFound(f"Session '{session_id}' not found")
            brand = existing.brand
            if brand_slug and brand_slug != brand.slug:
                raise ValidationError({"brand_id": ["the session belongs to another brand"]})
        else:
            found = Brand.objects.filter(slug=brand_slug, is_active=True).first() if brand_slug else _default_brand()
            if found is None:
                raise NotFound(f"Brand '{brand_slug}' not found or inactive" if brand_slug else "No active brand")
            brand = found
        if not visitor_rate_allows("sessions", brand.pk, user_id, brand.rate_limit_per_minute):
            raise Throttled(detail=f"Too many messages: at most {brand.rate_limit_per_minute} a minute per user.")
        text = body["message"]
        if len(text) > brand.max_message_length:
            raise ValidationError({"message": [f"is longer than {brand.max_message_length} characters"]})
        # A new session is opened and its first message stored in one transaction.
        message = services.VisitorMessage(
            existing.pk if existing else uuid.uuid4(), text, opens=existing is None, brand_id=brand.pk,
            channel=Channel.SESSIONS, user_id=user_id,
        )  # fmt: skip
        (accepted,) = services.accept_visitor_messages([message])
        if isinstance(accepted, services.Busy):
            raise Busy(f"The session is busy ({accepted}); wait for commit_done.")
        if isinstance(accepted, services.UnknownConversation):
            raise NotFound(f"Session '{session_id}' not found")  # it ended since it was read
        session = str(message.conversation_id)
        return Response({"session_id": session, "status": "ok", "message": RECEIVED_TEXT.format(session_id=session)})


class SessionDetail(APIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        summary="A session and its messages",
        responses={200: SESSION_SCHEMA, 404: OpenApiResponse(ERROR_SCHEMA, description="Unknown session")},
    )
    def get(self, request: Request, session_id: str) -> Response:
        conversation = _session(session_id)
        if conversation is None:
            raise NotFound(f"Session '{session_id}' not found")
        return Response(session_json(conversation))


# --- The SSE stream ---------------------------------------------------------------------------


def sse(event: str, data: str = "") -> bytes:
    """One SSE event; a multi-line data value becomes one `data:` line per line."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


@dataclass
class Snapshot:
    state: str
    last_error: str
    turn_seq: int  # the latest visitor message's seq (0: none)
    answers: list[dict[str, Any]]  # stored messages to the visitor after it
    buffered: dict[str, list[str]]  # stream id → pieces already streamed (in flight only)


def _snapshot(conversation_id: Any) -> Snapshot:
    conversation = Conversation.objects.get(pk=conversation_id)
    turn_seq = (
        Message.objects.filter(conversation=conversation, direction=Message.Direction.IN, seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    ) or 0
    answers = [
        {"seq": m.seq, "payload": m.payload, "cut_off": m.cut_off}
        for m in Message.objects.filter(conversation=conversation, seq__gt=turn_seq, direction=Message.Direction.OUT)
        .filter(Q(kind__in=ANSWER_KINDS))
        .order_by("seq")
    ]
    buffered: dict[str, list[str]] = {}
    if conversation.turn_state in turns.IN_FLIGHT and turn_seq:
        for attempt in (1, 2):
            stream_id = streams.stream_id_for(conversation.pk, turn_seq, attempt)
            buffered[stream_id] = streams.read_tokens(conversation.pk, stream_id)
    return Snapshot(conversation.turn_state, conversation.last_error, turn_seq, answers, buffered)


@dataclass
class SessionStream:
    """What one SSE client has been sent, so that replayed and live pieces are sent once."""

    session_id: str
    sent: dict[str, list[str]] = field(default_factory=dict)  # stream id → pieces sent
    last_seq: int = 0
    turn_seq: int = 0
    finished: bool = False
    group: str = ""

    def __post_init__(self) -> None:
        self.group = group_name(self.session_id)

    def token(self, stream_id: str, index: int, piece: str, buffered: list[str] | None = None) -> list[bytes]:
        sent = self.sent.setdefault(stream_id, [])
        if index < len(sent):
            return []  # already sent
        if index > len(sent) and buffered is not None:
            # Some pieces never reached us live: take them from the stream's buffer.
            missing = buffered[len(sent) : index]
            return [chunk for i, p in enumerate(missing, len(sent)) for chunk in self.token(stream_id, i, p)] + (
                self.token(stream_id, index, piece)
            )
        sent.append(piece)
        return [sse("token", piece)]

    def answer(self, seq: int, payload: dict[str, Any]) -> list[bytes]:
        """A stored answer: send what its stream has not sent yet, then `message_end`."""
        if seq <= self.last_seq:
            return []
        self.last_seq = seq
        content = str(payload.get("content") or "")
        stream_id = str(payload.get("streamId") or f"stored-{seq}")
        already = "".join(self.sent.get(stream_id, []))
        rest = content[len(already) :] if content.startswith(already) else content
        chunks = [sse("token", piece) for piece in split_words(rest)]
        self.sent[stream_id] = [content]
        return [*chunks, sse("message_end")]

    def finish(self, snapshot_state: str, error: str) -> list[bytes]:
        self.finished = True
        if snapshot_state == TurnState.ERROR:
            return [sse("error", error or GENERIC_ERROR)]
        return [sse("commit_done", self.session_id)]

    def from_snapshot(self, snapshot: Snapshot) -> list[bytes]:
        """Everything the stored state says this client should have, and whether the turn is over."""
        self.turn_seq = max(self.turn_seq, snapshot.turn_seq)
        out: list[bytes] = []
        if snapshot.state in turns.IN_FLIGHT:
            for stream_id, pieces in snapshot.buffered.items():
                for index, piece in enumerate(pieces):
                    out += self.token(stream_id, index, piece)
            return out
        for stored in snapshot.answers:
            out += self.answer(stored["seq"], stored["payload"])
        return out + self.finish(snapshot.state, snapshot.last_error)

    def on_event(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "stream.delta":
            # One event carries pieces of many conversations; one `token` per piece of ours.
            return [chunk for s, i, piece in stream_pieces(event, self.group) for chunk in self.token(s, i, piece)]
        if kind == "message":
            is_answer = event["direction"] == Message.Direction.OUT and event["kind"] in ANSWER_KINDS
            if is_answer and event["seq"] > self.turn_seq:
                return self.answer(event["seq"], event["payload"])
            return []
        if kind == "error" and event.get("reply_to") is None:
            self.finished = True
            return [sse("error", event["message"])]
        if kind == "turn" and event["state"] in (TurnState.IDLE, TurnState.AI_COMMITTED):
            self.finished = True
            return [sse("commit_done", self.session_id)]
        if kind == "turn" and event["state"] == TurnState.ERROR:
            # Normally the error event came first; the turn's reason is internal, never shown.
            self.finished = True
            return [sse("error", GENERIC_ERROR)]
        return []


async def _events(conversation_id: Any) -> AsyncIterator[bytes]:
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    group = group_name(conversation_id)
    # Join first, then read the stored state: whatever happens in between arrives twice and is
    # de-duplicated, nothing is lost.
    await layer.group_add(group, channel)
    stream = SessionStream(str(conversation_id))
    try:
        for chunk in stream.from_snapshot(await sync_to_async(_snapshot)(conversation_id)):
            yield chunk
        while not stream.finished:
            try:
                message = await asyncio.wait_for(layer.receive(channel), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"
                # A safety net for lost events: if the turn ended, finish from the stored state.
                for chunk in stream.from_snapshot(await sync_to_async(_snapshot)(conversation_id)):
                    yield chunk
                continue
            chunks: list[bytes] = []
            for event in message.get("events", []):
                chunks += stream.on_event(event)
                if stream.finished:
                    break
            if chunks:
                yield b"".join(chunks)  # still one SSE event per token, in one body write
    finally:
        await layer.group_discard(group, channel)


async def session_stream(request: HttpRequest, session_id: str) -> HttpResponseBase:
    if request.method != "GET":
        return JsonResponse({"error": "Method not allowed", "detail": "Use GET"}, status=405)
    conversation = await sync_to_async(_session)(session_id)
    if conversation is None:
        message = f"Session '{session_id}' not found"
        return JsonResponse({"error": message, "detail": message}, status=404)
    response = StreamingHttpResponse(_events(conversation.pk), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


urlpatterns: list[Any] = [
    path("sessions/<str:user_id>/messages", SessionMessages.as_view(), name="sessions-messages"),
    path("sessions/<str:session_id>/stream", session_stream, name="sessions-stream"),
    path("sessions/<str:session_id>", SessionDetail.as_view(), name="sessions-detail"),
]


def add_stream_to_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: the SSE stream is a plain async view, so describe it here."""
    result.setdefault("paths", {})["/sessions/{session_id}/stream"] = {
        "get": {
            "operationId": "sessions_stream",
            "summary": "Stream the answer (Server-Sent Events)",
            "description": "`text/event-stream; charset=utf-8`. Events: `token` (one `data:` line per line of "
            "the token), `message_end`, `commit_done` (data: the session id), or `error` (data: a message). "
            "Stays open until `commit_done` or `error`. Opened late, it still delivers the whole answer.",
            "tags": ["sessions"],
            "parameters": [
                {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            ],
            "responses": {
                "200": {
                    "description": "The event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "404": {
                    "description": "Unknown session",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
    return result

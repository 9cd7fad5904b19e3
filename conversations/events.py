"""Protocol-neutral events published to a conversation's channel-layer group.

Every adapter connected to a conversation receives the same events and renders them in its own
wire format. Stored messages carry their `seq`; adapters use it to skip what they already sent
and to notice gaps (then they re-read the log).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, TypedDict


class MessageEvent(TypedDict):
    type: Literal["message"]
    seq: int
    direction: str
    kind: str
    payload: dict[str, Any]
    cut_off: bool


class StreamDeltaEvent(TypedDict):
    """Pieces of streamed answers, of every stream that had some since the last such event.

    One event (and one channel-layer message per web process, see
    `publish.publish_stream_pieces_async`) carries many pieces of many conversations, so the cost
    of a message is paid per delivery, not per token; each socket picks its own conversation's
    entry and still writes one frame per piece."""

    type: Literal["stream.delta"]
    # group name (publish.group_name) → [[stream id, index of the first piece, [piece, ...]], ...]
    streams: dict[str, list[list[Any]]]


class ErrorEvent(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    # The channel name of the one socket the error is for; None: everybody on the conversation.
    reply_to: str | None


class TurnEvent(TypedDict):
    type: Literal["turn"]
    state: str
    reason: str


Event = MessageEvent | StreamDeltaEvent | ErrorEvent | TurnEvent

# The channel-layer message type that carries a batch of events; consumers handle it in
# `conversation_events`.
GROUP_MESSAGE_TYPE = "conversation.events"


def message_event(message: Any) -> MessageEvent:
    return {
        "type": "message",
        "seq": message.seq,
        "direction": message.direction,
        "kind": message.kind,
        "payload": message.payload,
        "cut_off": message.cut_off,
    }


def error_event(code: str, text: str, reply_to: str | None = None) -> ErrorEvent:
    return {"type": "error", "code": code, "message": text, "reply_to": reply_to}


def turn_event(state: str, reason: str = "") -> TurnEvent:
    return {"type": "turn", "state": state, "reason": reason}


def delta_event(streams: dict[str, list[list[Any]]]) -> StreamDeltaEvent:
    return {"type": "stream.delta", "streams": streams}


def stream_pieces(event: Any, group: str) -> Iterator[tuple[str, int, str]]:
    """(stream id, index, piece) of every piece a `stream.delta` event carries for one group."""
    for stream_id, first, pieces in event["streams"].get(group, ()):
        for offset, piece in enumerate(pieces):
            yield stream_id, first + offset, piece

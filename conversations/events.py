"""Protocol-neutral events published to a conversation's channel-layer group.

Every adapter connected to a conversation receives the same events and renders them in its own
wire format. Stored messages carry their `seq`; adapters use it to skip what they already sent
and to notice gaps (then they re-read the log).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class MessageEvent(TypedDict):
    type: Literal["message"]
    seq: int
    direction: str
    kind: str
    payload: dict[str, Any]
    cut_off: bool


class StreamDeltaEvent(TypedDict):
    type: Literal["stream.delta"]
    stream_id: str
    index: int
    delta: str


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


def delta_event(stream_id: str, index: int, delta: str) -> StreamDeltaEvent:
    return {"type": "stream.delta", "stream_id": stream_id, "index": index, "delta": delta}

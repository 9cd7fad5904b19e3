"""Every protocol's input parsing, fed hostile input: never an unhandled exception, always the
protocol's own error (or a well-formed request that respects the limits)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings as django_settings
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conversations.agents import wire
from conversations.protocols import brand_chat
from conversations.protocols.assistant import ID_MAX, ClientMessage, ProtocolError, parse_client_message
from tests.property.strategies import any_text, frames, json_values, objects_with

# Hypothesis warns when it prints a 20 kB example; huge values are the point here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FEW = settings(max_examples=200, deadline=None)
MAX_TEXT = 1000

ASSISTANT_CODES = {"bad_json", "unknown_kind", "invalid", "too_long"}
ASSISTANT_SHAPES = st.one_of(
    objects_with({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "rust", "content": "Rust", "clientId": "c1"}),
    objects_with({"kind": "UserText", "sessionId": "langPreference", "content": "Python", "clientId": "c2"}),
    objects_with({"kind": "ResetSession"}),
)


@FEW
@example('{"kind": []}')
@given(frames(ASSISTANT_SHAPES))
def test_the_assistant_parser_answers_every_frame_with_a_message_or_a_documented_error(raw: Any) -> None:
    parsed = parse_client_message(raw, MAX_TEXT)
    if isinstance(parsed, ProtocolError):
        assert parsed.code in ASSISTANT_CODES
        assert parsed.message
        assert parsed.as_wire()["kind"] == "Error"
        return
    assert isinstance(parsed, ClientMessage)
    assert parsed.kind in {"ChoiceResponse", "UserText", "ResetSession"}
    assert parsed.payload["kind"] == parsed.kind
    for key in ("groupId", "itemId", "sessionId"):
        if key in parsed.payload:
            assert isinstance(parsed.payload[key], str) and parsed.payload[key].strip()
            assert len(parsed.payload[key]) <= ID_MAX
    if "content" in parsed.payload:
        assert isinstance(parsed.payload["content"], str) and len(parsed.payload["content"]) <= MAX_TEXT
    assert parsed.client_id is None or (isinstance(parsed.client_id, str) and len(parsed.client_id) <= 100)


@FEW
@given(st.sampled_from(["groupId", "itemId", "sessionId", "content", "clientId"]), json_values)
def test_the_assistant_parser_refuses_any_non_string_in_a_string_field(key: str, value: Any) -> None:
    message: dict[str, Any] = {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "rust"}
    if key == "sessionId":
        message = {"kind": "UserText", "sessionId": "s", "content": "hi"}
    message[key] = value
    frame = json.dumps(message, ensure_ascii=False)
    parsed = parse_client_message(frame, MAX_TEXT)
    optional = key in {"content", "clientId"}
    if len(frame) > django_settings.MAX_FRAME_BYTES:
        assert isinstance(parsed, ProtocolError) and parsed.code == "too_long"
    elif value is None and optional:
        assert isinstance(parsed, ClientMessage)
    elif isinstance(value, str) and "\x00" in value:
        assert isinstance(parsed, ProtocolError) and parsed.code == "invalid"  # PostgreSQL cannot store NUL
    elif not isinstance(value, str) or (not optional and not value.strip()):
        assert isinstance(parsed, ProtocolError) and parsed.code == "invalid"
    elif len(value) > {"content": MAX_TEXT, "clientId": 100}.get(key, ID_MAX):
        assert isinstance(parsed, ProtocolError) and parsed.code == "too_long"
    else:
        assert isinstance(parsed, ClientMessage) and (parsed.payload.get(key) == value or parsed.client_id == value)


BRAND_CHAT_SHAPES = st.one_of(
    objects_with({"type": "chat", "data": {"message": "hello"}}),
    objects_with({"type": "ping", "data": {}}),
    st.fixed_dictionaries(
        {"type": st.just("chat")},
        optional={"data": objects_with({"message": "hi", "conversation_id": None, "user_id": "u1", "voice": False})},
    ),
)


@FEW
@given(frames(BRAND_CHAT_SHAPES))
def test_the_brand_chat_parser_answers_every_frame_with_a_request_a_ping_or_bad_input(raw: Any) -> None:
    parsed = brand_chat.parse_frame(raw, MAX_TEXT)
    assert isinstance(parsed, brand_chat.ChatRequest | brand_chat.Ping | brand_chat.BadInput)
    if isinstance(parsed, brand_chat.BadInput):
        assert isinstance(parsed.message, str) and parsed.message
        wire_message = brand_chat.error_message(parsed.message)
        assert wire_message["type"] == "error"
    elif isinstance(parsed, brand_chat.ChatRequest):
        assert isinstance(parsed.message, str) and parsed.message.strip() and len(parsed.message) <= MAX_TEXT
        assert parsed.conversation_id is None or (
            isinstance(parsed.conversation_id, str) and len(parsed.conversation_id) <= brand_chat.ID_MAX
        )
        assert parsed.user_id is None or (isinstance(parsed.user_id, str) and len(parsed.user_id) <= brand_chat.ID_MAX)
        assert isinstance(parsed.voice, bool)


AGENT_AUTH = objects_with(
    {
        "agent": {"name": "Emoji Analysis"},
        "user": {"id": 7, "name": "Alice"},
        "chat": {"id": "c1"},
    }
)


@FEW
@given(st.one_of(json_values, AGENT_AUTH, st.fixed_dictionaries({"agent": json_values, "user": json_values})))
def test_the_socketio_auth_parser_ignores_refuses_or_accepts_but_never_crashes(auth: Any) -> None:
    try:
        parsed = wire.parse_auth(auth)
    except wire.WireError as error:
        assert error.code in {"bad_request", "too_long"}
        return
    if parsed is not None:
        assert parsed.agent_name.strip() and parsed.user_id.strip()
        assert len(parsed.user_id) <= wire.MAX_ID_CHARS


@FEW
@given(st.one_of(json_values, objects_with({"key": "k1", "value": "I love it", "annotations": []}), any_text))
def test_the_socketio_request_parser_refuses_with_a_wire_error_or_accepts_within_limits(payload: Any) -> None:
    try:
        parsed = wire.parse_request(payload)
    except wire.WireError as error:
        assert error.code in {"bad_request", "too_long"}
        return
    assert parsed.key.strip() and len(parsed.key) <= wire.MAX_KEY_CHARS
    assert len(parsed.value) <= wire.MAX_VALUE_CHARS
    assert "result" not in parsed.payload
    assert isinstance(parsed.payload["annotations"], list)


@pytest.mark.parametrize("depth", [100, 900, 2_000])
def test_a_deeply_nested_socketio_request_that_json_can_decode_is_parsed_or_refused(depth: int) -> None:
    # Socket.IO payloads come out of json.loads: only nesting it can decode reaches the parser.
    text = '{"key": "k", "value": "v", "annotations": ' + "[" * depth + "]" * depth + "}"
    try:
        payload = json.loads(text)
    except RecursionError:
        pytest.skip("json.loads refuses this depth before the parser sees it")
    try:
        wire.parse_request(payload)
    except wire.WireError as error:
        assert error.code in {"bad_request", "too_long"}

"""Hostile frames through the real consumers (real Redis channel layer, real worker): each bad
frame gets exactly the protocol's error, every reply can be sent as UTF-8, nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from botsite.asgi import channels_app
from conversations.models import Conversation, Message, TurnTransition
from conversations.protocols import brand_chat
from conversations.protocols.assistant import ProtocolError, parse_client_message
from tests.property.strategies import frames, objects_with
from tests.property.test_parsers import ASSISTANT_SHAPES

# Hypothesis warns when it prints a 20 kB example; huge values are the point here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
DRIVEN = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_TEXT = 1000  # the demo brand's max_message_length


@database_sync_to_async
def _counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Message.objects.count(), TurnTransition.objects.count()


async def _send(communicator: WebsocketCommunicator, frame: str | bytes) -> None:
    # send_input, not send_to: send_to refuses empty frames, which clients can send.
    key = "bytes" if isinstance(frame, bytes) else "text"
    await communicator.send_input({"type": "websocket.receive", key: frame})


def _reply(raw: str) -> dict[str, Any]:
    raw.encode("utf-8")  # daphne must be able to put it on the wire
    return dict(json.loads(raw))


def _assistant_error(frame: str | bytes) -> ProtocolError | None:
    try:
        parsed = parse_client_message(frame, MAX_TEXT)
    except TypeError:
        return None  # a known parser crash, reported by test_parsers
    return parsed if isinstance(parsed, ProtocolError) else None


bad_assistant_frames = frames(ASSISTANT_SHAPES).filter(lambda f: f is not None)


@pytest.mark.django_db(transaction=True)
@DRIVEN
@given(st.lists(bad_assistant_frames, min_size=1, max_size=8))
def test_the_assistant_socket_answers_bad_frames_with_their_error_and_stores_nothing(techpro, worker, batch):
    expected = [_assistant_error(frame) for frame in batch]
    assume(all(e is not None for e in expected))

    async def drive() -> None:
        communicator = WebsocketCommunicator(channels_app, "/ws/assistant/techpro/")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        # Session, then the flow's greeting and first question from the worker.
        while _reply(await communicator.receive_from(timeout=10)).get("kind") != "ChoiceRequest":
            pass
        before = await _counts()
        for frame, error in zip(batch, expected, strict=True):
            await _send(communicator, frame)
            reply = _reply(await communicator.receive_from(timeout=10))
            assert reply["kind"] == "Error" and error is not None and reply["code"] == error.code
        assert await communicator.receive_nothing(timeout=0.05)
        assert await _counts() == before
        await communicator.disconnect()

    async_to_sync(drive)()


BRAND_CHAT_SHAPES = st.one_of(
    objects_with({"type": "chat", "data": {"message": "hello"}}),
    objects_with({"type": "ping", "data": {}}),
    st.fixed_dictionaries(
        {"type": st.just("chat")},
        optional={"data": objects_with({"message": "hi", "conversation_id": None, "user_id": "u1", "voice": False})},
    ),
)
bad_chat_frames = frames(BRAND_CHAT_SHAPES).filter(
    lambda f: f is not None and isinstance(brand_chat.parse_frame(f, MAX_TEXT), brand_chat.BadInput)
)


@pytest.mark.django_db(transaction=True)
@DRIVEN
@given(st.lists(bad_chat_frames, min_size=1, max_size=8))
def test_the_brand_chat_socket_answers_bad_frames_with_an_error_and_stores_nothing(techpro, worker, batch):
    async def drive() -> None:
        communicator = WebsocketCommunicator(channels_app, "/ws/chat/techpro")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        assert _reply(await communicator.receive_from(timeout=10))["type"] == "welcome"
        before = await _counts()
        for frame in batch:
            await _send(communicator, frame)
            reply = _reply(await communicator.receive_from(timeout=10))
            assert reply["type"] == "error" and reply["data"]["message"]
        assert await communicator.receive_nothing(timeout=0.05)
        assert await _counts() == before
        await communicator.disconnect()

    async_to_sync(drive)()

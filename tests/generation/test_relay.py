"""The worker's relay: pieces reach their stream logs and then every follower of the conversation,
in one command when the channel layer and the logs share a Redis server, in two pipelines when
they do not."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aredis
from channels.layers import get_channel_layer
from django.conf import settings

from conversations.events import stream_pieces
from conversations.generation import streams
from conversations.generation.relay import Relay
from conversations.publish import group_name


async def _follow(conversation_id: uuid.UUID) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(conversation_id), channel)
    return channel


async def _pieces_received(channel: str, conversation_id: uuid.UUID, count: int) -> list[tuple[str, int, str]]:
    layer = get_channel_layer()
    got: list[tuple[str, int, str]] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            message = await layer.receive(channel)
            for event in message["events"]:
                got += stream_pieces(event, group_name(conversation_id))
    return got


def _alias_of_our_server(tmp_path: Path) -> str:
    """A URL of the stream logs' Redis server that redis-py cannot tell is the same one."""
    url = streams._url()
    if url.startswith("unix://"):
        socket_path = url.removeprefix("unix://").split("?", 1)[0]
        alias = tmp_path / "redis.sock"
        os.symlink(socket_path, alias)
        return url.replace(socket_path, str(alias))
    if "127.0.0.1" in url:
        return url.replace("127.0.0.1", "localhost")
    return url.replace("localhost", "127.0.0.1")


async def _deliver_two_conversations(relay: Relay) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    channels = [await _follow(first), await _follow(second)]
    for index, piece in enumerate(["Hel", "lo", " ", "wörld 🌍"]):
        relay.put(first, "a-1-1", index, piece)
    relay.put(second, "b-1-1", 0, "only")
    relay.put(first, "a-1-2", 0, "other stream")
    await relay.drain(first, ["a-1-1", "a-1-2"])
    await relay.drain(second, ["b-1-1"])

    # In the logs before anyone heard of them: a late reader gets the same pieces.
    assert await streams.read_tokens_async(first, "a-1-1") == ["Hel", "lo", " ", "wörld 🌍"]
    assert await streams.read_tokens_async(first, "a-1-2") == ["other stream"]
    assert await streams.read_tokens_async(second, "b-1-1") == ["only"]
    ttl = await relay.client.ttl(streams.tokens_key(first, "a-1-1"))
    assert 0 < ttl <= streams.KEEP_SECONDS

    got = await _pieces_received(channels[0], first, 5)
    assert sorted(got) == sorted(
        [
            ("a-1-1", 0, "Hel"),
            ("a-1-1", 1, "lo"),
            ("a-1-1", 2, " "),
            ("a-1-1", 3, "wörld 🌍"),
            ("a-1-2", 0, "other stream"),
        ]
    )
    assert await _pieces_received(channels[1], second, 1) == [("b-1-1", 0, "only")]


pubsub_only = pytest.mark.skipif(
    "PubSub" not in settings.CHANNEL_LAYERS["default"]["BACKEND"], reason="the pub/sub layer"
)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    made = Relay()
    yield made
    made.task.cancel()
    await made.client.aclose()


@pubsub_only
async def test_a_delivery_is_one_command_when_the_layer_and_the_logs_share_a_server(relay: Relay) -> None:
    await _deliver_two_conversations(relay)
    assert list(relay.same_server.values()) == [True]


@pubsub_only
async def test_a_delivery_falls_back_to_two_pipelines_when_the_servers_differ(relay: Relay, tmp_path: Path) -> None:
    await relay.client.aclose()
    relay.client = aredis.Redis.from_url(_alias_of_our_server(tmp_path), decode_responses=True)
    relay.append_and_publish = relay.client.register_script("error('not to be used here')")
    await _deliver_two_conversations(relay)
    assert list(relay.same_server.values()) == [False]

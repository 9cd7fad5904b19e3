"""Streamed pieces on a real Redis: on channels_redis's list-based layer one message per receiving
process, held back while that process has not taken the previous one; on the project's pub/sub
layer one event per conversation."""

import uuid

from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from conversations.events import stream_pieces
from conversations.publish import StreamPiecePublisher, group_name

_lists: dict[int, RedisChannelLayer] = {}


def list_layer() -> RedisChannelLayer:
    """channels_redis's list-based layer on the test Redis (the project runs the pub/sub one)."""
    if not _lists:
        _lists[0] = RedisChannelLayer(hosts=settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"])
    return _lists[0]


async def listening(*groups: str, layer=None) -> str:
    layer = layer or list_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


def pieces(messages: list[dict], group: str) -> list[tuple[str, int, str]]:
    return [piece for message in messages for event in message["events"] for piece in stream_pieces(event, group)]


async def test_pieces_wait_while_the_last_message_is_not_taken_and_arrive_in_order():
    layer = list_layer()
    conversation, other_conversation = uuid.uuid4(), uuid.uuid4()
    group, other = group_name(conversation), group_name(other_conversation)
    mine, theirs = await listening(group), await listening(other)
    publisher = StreamPiecePublisher(hold_limit=60, layer=layer)
    await publisher.publish({conversation: [["s1", 0, ["a"]]], other_conversation: [["s9", 0, ["x"]]]})
    await publisher.publish({conversation: [["s1", 1, ["b", "c"]]]})
    assert publisher.holds(group)  # the process has not taken the first message yet
    first = await layer.receive(mine)
    assert await layer.receive(theirs) is not None  # one message for both sockets of the process
    await publisher.publish({})
    assert not publisher.holds(group)
    second = await layer.receive(mine)
    assert pieces([first, second], group) == [("s1", 0, "a"), ("s1", 1, "b"), ("s1", 2, "c")]
    assert pieces([first], other) == [("s9", 0, "x")]


async def test_held_pieces_are_sent_anyway_after_the_hold_limit():
    layer = list_layer()
    conversation = uuid.uuid4()
    group = group_name(conversation)
    channel = await listening(group)
    publisher = StreamPiecePublisher(hold_limit=0, layer=layer)
    await publisher.publish({conversation: [["s1", 0, ["a"]]]})
    await publisher.publish({conversation: [["s1", 1, ["b"]]]})
    await publisher.publish({})  # held once, then past the limit: sent though the key is busy
    assert not publisher.holds(group)
    messages = [await layer.receive(channel), await layer.receive(channel)]
    assert pieces(messages, group) == [("s1", 0, "a"), ("s1", 1, "b")]


async def test_on_the_project_layer_each_conversation_gets_its_own_pieces():
    layer = get_channel_layer()
    first, second = uuid.uuid4(), uuid.uuid4()
    mine = await listening(group_name(first), layer=layer)
    publisher = StreamPiecePublisher()
    await publisher.publish({first: [["s1", 0, ["a", "b"]]], second: [["s2", 0, ["z"]]]})
    message = await layer.receive(mine)
    assert pieces([message], group_name(first)) == [("s1", 0, "a"), ("s1", 1, "b")]
    assert not publisher.held

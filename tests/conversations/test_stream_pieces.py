"""Streamed pieces on the real channel layer: one message per receiving process, held back while
that process has not taken the previous one."""

import uuid

from channels.layers import get_channel_layer

from conversations.events import stream_pieces
from conversations.publish import StreamPiecePublisher, group_name


async def listening(*groups: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


def pieces(messages: list[dict], group: str) -> list[tuple[str, int, str]]:
    return [piece for message in messages for event in message["events"] for piece in stream_pieces(event, group)]


async def test_pieces_wait_while_the_last_message_is_not_taken_and_arrive_in_order():
    layer = get_channel_layer()
    group, other = group_name(uuid.uuid4()), group_name(uuid.uuid4())
    mine, theirs = await listening(group), await listening(other)
    publisher = StreamPiecePublisher(hold_limit=60)
    await publisher.publish({group: [["s1", 0, ["a"]]], other: [["s9", 0, ["x"]]]})
    await publisher.publish({group: [["s1", 1, ["b", "c"]]]})
    assert publisher.holds(group)  # the process has not taken the first message yet
    first = await layer.receive(mine)
    assert await layer.receive(theirs) is not None  # one message for both sockets of the process
    await publisher.publish({})
    assert not publisher.holds(group)
    second = await layer.receive(mine)
    assert pieces([first, second], group) == [("s1", 0, "a"), ("s1", 1, "b"), ("s1", 2, "c")]
    assert pieces([first], other) == [("s9", 0, "x")]


async def test_held_pieces_are_sent_anyway_after_the_hold_limit():
    layer = get_channel_layer()
    group = group_name(uuid.uuid4())
    channel = await listening(group)
    publisher = StreamPiecePublisher(hold_limit=0)
    await publisher.publish({group: [["s1", 0, ["a"]]]})
    await publisher.publish({group: [["s1", 1, ["b"]]]})
    await publisher.publish({})  # held once, then past the limit: sent though the key is busy
    assert not publisher.holds(group)
    messages = [await layer.receive(channel), await layer.receive(channel)]
    assert pieces(messages, group) == [("s1", 0, "a"), ("s1", 1, "b")]

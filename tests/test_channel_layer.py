"""botsite/channel_layer.py against the real Redis: batched subscriptions behave like single ones."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from botsite.channel_layer import PubSubChannelLayer, _BatchedShard


async def _nothing_on(layer, channel: str) -> bool:
    try:
        async with asyncio.timeout(0.3):
            await layer.receive(channel)
    except TimeoutError:
        return True
    return False


async def test_hundreds_of_sockets_joining_at_once_all_get_the_group_message():
    layer = get_channel_layer()
    assert isinstance(layer, PubSubChannelLayer)
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(300)))
    await asyncio.gather(*(layer.group_add("crowd", channel) for channel in channels))
    await layer.group_send("crowd", {"type": "hello", "n": 1})
    async with asyncio.timeout(10):
        received = await asyncio.gather(*(layer.receive(channel) for channel in channels))
    assert all(message == {"type": "hello", "n": 1} for message in received)

    await asyncio.gather(*(layer.group_discard("crowd", channel) for channel in channels))
    await layer.group_send("crowd", {"type": "hello", "n": 2})
    assert await _nothing_on(layer, channels[0])


async def test_a_leave_and_a_join_queued_together_apply_in_order():
    layer = get_channel_layer()
    stays, leaves = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("order", leaves)
    # Queued in the same moment: discard `leaves`, then add `stays`, then add and discard again.
    await asyncio.gather(
        layer.group_discard("order", leaves),
        layer.group_add("order", stays),
        layer.group_add("order", leaves),
        layer.group_discard("order", leaves),
    )
    await layer.group_send("order", {"type": "ping"})
    async with asyncio.timeout(10):
        assert await layer.receive(stays) == {"type": "ping"}
    assert await _nothing_on(layer, leaves)


@pytest.mark.parametrize("cancel_after", [0, 1])
async def test_a_socket_closing_mid_subscribe_leaves_the_layer_usable(cancel_after):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    joining = asyncio.ensure_future(layer.group_add("flaky", channel))
    for _ in range(cancel_after):
        await asyncio.sleep(0)
    joining.cancel()
    other = await layer.new_channel()
    await layer.group_add("flaky", other)
    await layer.group_send("flaky", {"type": "still"})
    async with asyncio.timeout(10):
        assert await layer.receive(other) == {"type": "still"}


async def test_a_burst_read_in_one_go_reaches_every_channel_in_order_with_subscriptions_between():
    """Hundreds of messages sent at once arrive in few socket reads: the receive loop hands on
    everything the parser holds, and subscription changes between them still go through redis-py."""
    layer = get_channel_layer()
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("burst", first)
    await asyncio.gather(*(layer.group_send("burst", {"type": "n", "n": n}) for n in range(300)))
    async with asyncio.timeout(10):
        got_first = [(await layer.receive(first))["n"] for _ in range(300)]
    # The group's members are looked up when a message arrives: join once the first burst is in.
    await asyncio.gather(
        layer.group_add("burst", second),
        *(layer.group_send("burst", {"type": "n", "n": n}) for n in range(300, 400)),
        layer.group_add("another", second),
    )
    await layer.group_send("burst", {"type": "n", "n": 400})
    async with asyncio.timeout(10):
        got_first += [(await layer.receive(first))["n"] for _ in range(101)]
        got_second = [(await layer.receive(second))["n"]]
        while got_second[-1] != 400:  # whatever arrived after it joined, then the last one
            got_second.append((await layer.receive(second))["n"])
    assert got_first == list(range(401))
    assert got_second == sorted(set(got_second))
    assert await _nothing_on(layer, second)


async def test_the_first_subscription_wakes_the_receive_loop_at_once(monkeypatch):
    """A process with nothing subscribed used to nap 100 ms at a time before looking again, so
    the first messages of its first sockets waited for the nap's end. With that fallback nap made
    longer than the test's patience, a message sent right after the first subscription must
    still arrive: the subscription itself wakes the loop."""
    monkeypatch.setattr(_BatchedShard, "IDLE_WAIT", 60.0)
    layer = PubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    try:
        for attempt in range(3):  # the first subscription, and again after all were dropped
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "first", "attempt": attempt})
            async with asyncio.timeout(10):
                assert await layer.receive(channel) == {"type": "first", "attempt": attempt}
            await layer._get_layer()._shards[0].unsubscribe(channel)
            await asyncio.sleep(0.05)  # the receive loop notices it has nothing left and waits
    finally:
        await layer.flush()

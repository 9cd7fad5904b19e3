"""The one place that sends events to connected clients, from web processes and workers alike.

Synchronous callers (services, Celery tasks) hand coroutines to one long-lived event loop per
process, so the channel layer keeps its Redis connections instead of opening one per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from conversations.events import GROUP_MESSAGE_TYPE, Event

logger = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()


def group_name(conversation_id: Any) -> str:
    hex_id = conversation_id.hex if hasattr(conversation_id, "hex") else str(conversation_id).replace("-", "")
    return f"conv.{hex_id}"


async def publish_async(conversation_id: Any, events: Sequence[Event]) -> None:
    if not events:
        return
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(group_name(conversation_id), {"type": GROUP_MESSAGE_TYPE, "events": list(events)})


def _background_loop() -> asyncio.AbstractEventLoop:
    """An event loop in a daemon thread, started lazily and again after a fork."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or not _loop.is_running():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="publish-loop", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_in_publish_loop(coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result(timeout)


def publish(conversation_id: Any, events: Sequence[Event]) -> None:
    """Send events now, from synchronous code. A dead Redis must not fail the caller: the
    message log is the truth and clients catch up from it when they reconnect."""
    if not events:
        return
    try:
        run_in_publish_loop(publish_async(conversation_id, events))
    except Exception:
        logger.warning("publishing %d events failed; clients will catch up from the log", len(events), exc_info=True)


def publish_on_commit(conversation_id: Any, events: Sequence[Event]) -> None:
    """Send events once the surrounding transaction has committed (never before)."""
    events = list(events)
    transaction.on_commit(lambda: publish(conversation_id, events))


# --- Streamed pieces: one channel-layer message per receiving process, not per token and socket ---

# channels_redis's group_send script, with its separate expiry round trip folded in.
_SEND_TO_CHANNEL_KEYS = """
local over_capacity = 0
local now = tonumber(ARGV[#ARGV - 1])
local expiry = tonumber(ARGV[#ARGV])
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


async def publish_stream_pieces_async(streams: dict[str, list[list[Any]]]) -> None:
    """Send one `stream.delta` event (events.delta_event) holding the pieces of many conversations.

    `group_send` per conversation and token costs three Redis round trips in the sender and, per
    socket, a channel-layer receive (four round trips) in daphne. Here every group's members are
    read in one pipeline and each receiving process gets ONE message, addressed to all its
    channels at once (channels_redis delivers a message whose `__asgi_channel__` lists several
    local channels to each of them); every socket takes its own group's entry. Capacity and
    expiry behave as in `group_send`.
    """
    if not streams:
        return
    from channels_redis.core import RedisChannelLayer

    from conversations.events import delta_event

    layer = get_channel_layer()
    assert layer is not None
    if not isinstance(layer, RedisChannelLayer):  # e.g. the in-memory layer: the plain way
        for group, entries in streams.items():
            message = {"type": GROUP_MESSAGE_TYPE, "events": [delta_event({group: entries})]}
            await layer.group_send(group, message)
        return
    now = time.time()
    groups_by_host: dict[int, list[str]] = defaultdict(list)
    for group in streams:
        groups_by_host[layer.consistent_hash(group)].append(group)
    # channel key → (its channels, the groups they follow); channel key → host
    targets: dict[str, tuple[dict[str, None], dict[str, list[list[Any]]]]] = {}
    target_host: dict[str, int] = {}
    for host, groups in groups_by_host.items():
        pipe = layer.connection(host).pipeline(transaction=False)
        for group in groups:
            key = layer._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=int(now) - layer.group_expiry)
            pipe.zrange(key, 0, -1)
        replies = await pipe.execute()
        for group, names in zip(groups, replies[1::2], strict=True):
            for raw in names:
                channel = raw.decode("utf8")
                channel_key = layer.prefix + layer.non_local_name(channel)
                target = targets.get(channel_key)
                if target is None:
                    target = targets[channel_key] = ({}, {})
                    target_host[channel_key] = layer.consistent_hash(layer.non_local_name(channel))
                target[0][channel] = None
                target[1][group] = streams[group]
    keys_by_host: dict[int, list[str]] = defaultdict(list)
    for channel_key, host in target_host.items():
        keys_by_host[host].append(channel_key)
    for host, channel_keys in keys_by_host.items():
        messages = []
        capacities = []
        for channel_key in channel_keys:
            channels, for_groups = targets[channel_key]
            message = {
                "type": GROUP_MESSAGE_TYPE,
                "events": [delta_event(for_groups)],
                "__asgi_channel__": list(channels),
            }
            messages.append(layer.serialize(message))
            capacities.append(layer.get_capacity(next(iter(channels))))
        over = await layer.connection(host).eval(
            _SEND_TO_CHANNEL_KEYS, len(channel_keys), *channel_keys, *messages, *capacities, now, layer.expiry
        )
        if over:
            logger.info("%s of %s processes' channels over capacity for streamed pieces", over, len(channel_keys))

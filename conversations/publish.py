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
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import transaction

from botsite.eventloop import new_event_loop
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
            loop = new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="publish-loop", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_in_publish_loop(coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result(timeout)


def publish(conversation_id: Any, events: Sequence[Event]) -> None:
    """Send events now, from synchronous code. A dead Redis must not fail the caller: the
    message log is the truth and clients catch up from it when they reconnect."""
    publish_many([(conversation_id, events)])


async def publish_many_async(batches: Sequence[tuple[Any, Sequence[Event]]]) -> None:
    """Send several conversations' events (a worker's batch). On the Redis pub/sub layer that is
    one pipeline of PUBLISH commands per shard, the same channel names and serialization as its
    `group_send` (channels-redis 4.3), instead of one locked round trip per conversation."""
    layer = get_channel_layer()
    assert layer is not None
    if not isinstance(layer, RedisPubSubChannelLayer) or len(batches) == 1:
        await asyncio.gather(*(publish_async(conversation_id, events) for conversation_id, events in batches))
        return
    await publish_messages(pubsub_messages(layer, batches))


async def publish_messages(by_shard: Sequence[tuple[Any, Sequence[tuple[str, bytes]]]]) -> None:
    """Send what `pubsub_messages` prepared: one pipeline of PUBLISH commands per shard."""
    for shard, messages in by_shard:
        pipe = shard._redis.pipeline(transaction=False)
        for channel, payload in messages:
            pipe.publish(channel, payload)
        await pipe.execute()


def pubsub_messages(
    layer: RedisPubSubChannelLayer, batches: Sequence[tuple[Any, Sequence[Event]]]
) -> list[tuple[Any, list[tuple[str, bytes]]]]:
    """What `group_send` would PUBLISH for each conversation's events, by shard: (shard, its
    (channel, payload) pairs), each shard connected (channels-redis 4.3's internals)."""
    loop_layer = layer._get_layer()
    by_shard: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for conversation_id, events in batches:
        channel = loop_layer._get_group_channel_name(group_name(conversation_id))
        shard = loop_layer._get_shard(channel)
        by_shard[id(shard)].append((channel, layer.serialize({"type": GROUP_MESSAGE_TYPE, "events": list(events)})))
    found = []
    for shard in loop_layer._shards:
        if id(shard) in by_shard:
            shard._ensure_redis()
            found.append((shard, by_shard[id(shard)]))
    return found


def publish_many(batches: Sequence[tuple[Any, Sequence[Event]]]) -> None:
    """Send several conversations' events at once (a worker's batch), from synchronous code."""
    batches = [(conversation_id, events) for conversation_id, events in batches if events]
    if not batches:
        return
    try:
        run_in_publish_loop(publish_many_async(batches))
    except Exception:
        logger.warning("publishing to %d conversations failed; clients read the log", len(batches), exc_info=True)


def publish_on_commit(conversation_id: Any, events: Sequence[Event]) -> None:
    """Send events once the surrounding transaction has committed (never before)."""
    events = list(events)
    transaction.on_commit(lambda: publish(conversation_id, events))


# --- Streamed pieces: one channel-layer message per receiving process, not per token and socket ---

# channels_redis's group_send script, with its separate expiry round trip folded in, and a hold:
# a key whose previous message is still waiting (mode 1) is left alone and reported back.
_SEND_TO_CHANNEL_KEYS = """
local result = {0}
local n = #KEYS
local now = tonumber(ARGV[3 * n + 1])
local expiry = tonumber(ARGV[3 * n + 2])
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
    local waiting = redis.call('ZCARD', KEYS[i])
    if ARGV[2 * n + i] == '1' and waiting > 0 then
        table.insert(result, i)
    elseif waiting < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        result[1] = result[1] + 1
    end
end
return result
"""


class StreamPiecePublisher:
    """Sends `stream.delta` events (events.delta_event) holding the pieces of many conversations,
    from one event loop (a worker's streaming loop).

    `group_send` per conversation and token costs three Redis round trips in the sender and, per
    socket, a channel-layer receive (four sequential round trips) in daphne. Here every group's
    members are read in one pipeline and each receiving process gets ONE message, addressed to
    all its channels at once (channels_redis hands a message whose `__asgi_channel__` lists
    several local channels to each of them); every socket takes its own group's entry. Capacity
    and expiry behave as in `group_send`.

    A process that has not yet taken our previous message off its channel key gets no second
    one: the pieces are held and join the next delivery, so a busy daphne receives fewer, larger
    messages instead of a growing backlog. Held longer than `hold_limit` seconds (a process that
    died leaves its channels in their groups), they are sent anyway.
    """

    def __init__(self, hold_limit: float = 1.0, layer: Any = None) -> None:
        self.hold_limit = hold_limit
        self.layer = layer  # None: the project's layer
        # channel key → (held since, host, its channels, group → entries)
        self.held: dict[str, tuple[float, int, dict[str, None], dict[str, list[list[Any]]]]] = {}

    @staticmethod
    def pubsub_batches(by_conversation: dict[Any, list[list[Any]]]) -> list[tuple[Any, list[Event]]]:
        """On the pub/sub layer: each conversation's entries as one `stream.delta` event."""
        from conversations.events import delta_event

        return [(cid, [delta_event({group_name(cid): entries})]) for cid, entries in by_conversation.items()]

    def holds(self, group: str) -> bool:
        return any(group in held[3] for held in self.held.values())

    async def publish(self, by_conversation: dict[Any, list[list[Any]]]) -> None:
        """Send the entries ([stream id, first index, pieces]) of each conversation."""
        from channels_redis.core import RedisChannelLayer

        from conversations.events import delta_event

        layer = self.layer or get_channel_layer()
        assert layer is not None
        if not isinstance(layer, RedisChannelLayer):
            # The pub/sub layer has no per-process queue to address or to look at: one event per
            # conversation, all PUBLISHed in one pipeline (publish_many_async); no holding.
            batches = self.pubsub_batches(by_conversation)
            if batches:
                await publish_many_async(batches)
            return
        streams = {group_name(cid): entries for cid, entries in by_conversation.items()}
        now = time.time()
        # channel key → (host, its channels, group → entries): what is held first, then the new
        targets = {key: (host, dict(channels), {g: list(e) for g, e in groups.items()})
                   for key, (_, host, channels, groups) in self.held.items()}  # fmt: skip
        added: set[tuple[str, str]] = set()
        groups_by_host: dict[int, list[str]] = defaultdict(list)
        for group in streams:
            groups_by_host[layer.consistent_hash(group)].append(group)
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
                    non_local = layer.non_local_name(channel)
                    channel_key = layer.prefix + non_local
                    target = targets.get(channel_key)
                    if target is None:
                        target = targets[channel_key] = (layer.consistent_hash(non_local), {}, {})
                    target[1][channel] = None
                    if (channel_key, group) not in added:
                        added.add((channel_key, group))
                        # after any held ones: older pieces first
                        target[2][group] = target[2].get(group, []) + streams[group]
        keys_by_host: dict[int, list[str]] = defaultdict(list)
        for channel_key, (host, _, _) in targets.items():
            keys_by_host[host].append(channel_key)
        for host, channel_keys in keys_by_host.items():
            messages, capacities, modes = [], [], []
            for channel_key in channel_keys:
                _, channels, for_groups = targets[channel_key]
                message = {
                    "type": GROUP_MESSAGE_TYPE,
                    "events": [delta_event(for_groups)],
                    "__asgi_channel__": list(channels),
                }
                messages.append(layer.serialize(message))
                capacities.append(layer.get_capacity(next(iter(channels))))
                held = self.held.get(channel_key)
                modes.append("0" if held is not None and now - held[0] > self.hold_limit else "1")
            result = await layer.connection(host).eval(
                _SEND_TO_CHANNEL_KEYS, len(channel_keys), *channel_keys, *messages, *capacities, *modes, now,
                layer.expiry,
            )  # fmt: skip
            busy = {channel_keys[int(i) - 1] for i in result[1:]}
            for channel_key in channel_keys:
                if channel_key in busy:
                    since = self.held[channel_key][0] if channel_key in self.held else now
                    self.held[channel_key] = (since, *targets[channel_key])
                else:
                    self.held.pop(channel_key, None)
            if result[0]:
                logger.info("%s of %s processes' channels over capacity for streamed pieces", result[0],
                            len(channel_keys))  # fmt: skip

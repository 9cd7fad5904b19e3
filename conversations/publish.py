"""The one place that sends events to connected clients, from web processes and workers alike.

Synchronous callers (services, Celery tasks) hand coroutines to one long-lived event loop per
process, so the channel layer keeps its Redis connections instead of opening one per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from typing import Any

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
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


async def publish_many_async(batches: Sequence[tuple[Any, Sequence[Event]]]) -> None:
    """Send several conversations' events (a worker's batch). On the Redis pub/sub layer that is
    one pipeline of PUBLISH commands per shard, the same channel names and serialization as its
    `group_send` (channels-redis 4.3), instead of one locked round trip per conversation."""
    layer = get_channel_layer()
    assert layer is not None
    if not isinstance(layer, RedisPubSubChannelLayer) or len(batches) == 1:
        await asyncio.gather(*(publish_async(conversation_id, events) for conversation_id, events in batches))
        return
    loop_layer = layer._get_layer()
    by_shard: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for conversation_id, events in batches:
        channel = loop_layer._get_group_channel_name(group_name(conversation_id))
        shard = loop_layer._get_shard(channel)
        by_shard[id(shard)].append((channel, layer.serialize({"type": GROUP_MESSAGE_TYPE, "events": list(events)})))
    for shard in loop_layer._shards:
        if id(shard) not in by_shard:
            continue
        shard._ensure_redis()
        pipe = shard._redis.pipeline(transaction=False)
        for channel, payload in by_shard[id(shard)]:
            pipe.publish(channel, payload)
        await pipe.execute()


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

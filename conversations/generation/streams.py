"""Where a streamed answer lives while it is being generated: a Redis list of its pieces.

The worker appends every piece before publishing it (`relay.Relay`), so a stream opened late (the
SSE endpoint) can replay what was already sent, and a redelivered task can keep what a dead worker
streamed. A heartbeat key, refreshed while the worker streams (`relay.heartbeat`), tells a
redelivered task whether the first run is still alive.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings

from botsite.env import redis_url_for_db

# Logical Redis database for stream buffers (0: channel layer, 1: Celery, 2: cache).
STREAMS_DB = 3
# How long the pieces of a finished or abandoned stream are kept.
KEEP_SECONDS = 3600


def _url() -> str:
    return redis_url_for_db(settings.REDIS_URL, STREAMS_DB)


def stream_id_for(conversation_id: Any, user_seq: int, attempt: int) -> str:
    """Stream ids are derived, not random, so that a redelivered task finds what was streamed.

    Attempt 1 is the brand's provider, attempt 2 the offline fallback."""
    hex_id = conversation_id.hex if hasattr(conversation_id, "hex") else str(conversation_id).replace("-", "")
    return f"{hex_id[:12]}-{user_seq}-{attempt}"


def tokens_key(conversation_id: Any, stream_id: str) -> str:
    return f"stream:{conversation_id}:{stream_id}:tokens"


def alive_key(conversation_id: Any, user_seq: int) -> str:
    return f"stream:{conversation_id}:turn-{user_seq}:alive"


def heartbeat_seconds() -> int:
    return int(getattr(settings, "GENERATION_HEARTBEAT_SECONDS", 10))


_pools: dict[int, redis.ConnectionPool] = {}


def sync_client() -> redis.Redis:
    """A client on this process's shared pool (closing the client keeps the pool's connections)."""
    pool = _pools.get(os.getpid())
    if pool is None:
        pool = _pools[os.getpid()] = redis.ConnectionPool.from_url(_url(), decode_responses=True)
    return redis.Redis(connection_pool=pool)


def async_client() -> aredis.Redis:
    return aredis.Redis.from_url(_url(), decode_responses=True)


def read_tokens(conversation_id: Any, stream_id: str) -> list[str]:
    with sync_client() as client:
        return list(client.lrange(tokens_key(conversation_id, stream_id), 0, -1))


async def read_tokens_async(conversation_id: Any, stream_id: str) -> list[str]:
    client = async_client()
    try:
        return [str(piece) for piece in await client.lrange(tokens_key(conversation_id, stream_id), 0, -1)]
    finally:
        await client.aclose()


def is_alive(conversation_id: Any, user_seq: int) -> bool:
    with sync_client() as client:
        return bool(client.exists(alive_key(conversation_id, user_seq)))


def forget(conversation_id: Any, user_seq: int, stream_ids: list[str]) -> None:
    """The answer is stored: drop the heartbeat, keep the pieces a little for late readers."""
    with sync_client() as client:
        client.delete(alive_key(conversation_id, user_seq))
        for stream_id in stream_ids:
            client.expire(tokens_key(conversation_id, stream_id), 120)

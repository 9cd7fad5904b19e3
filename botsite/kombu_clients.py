"""One redis-py client per kombu channel, instead of one per command.

kombu 5.7's Redis transport builds a new `redis.Redis` for every command it sends outside its
event loop: publishing a task, recording a delivered message as unacknowledged, acknowledging it.
The constructor fills a case-insensitive dict with ~170 response callbacks each time: a fifth of
an enqueue in daphne and a fifth of the Celery main process's CPU in the flow benchmark
(docs/performance.md). A `redis.Redis` is only a handle on its connection pool, safe to share
between threads, so each channel keeps one for its pool; a new pool (after a fork, or a
reconnect) gets a new client. The event loop's own clients are left as kombu makes them.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


def install() -> None:
    original = kombu_redis.Channel._create_client
    if getattr(original, "shares_clients", False):
        return

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_shared_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_shared_client"] = (pool, original(self))
        return cached[1]

    _create_client.shares_clients = True  # type: ignore[attr-defined]
    kombu_redis.Channel._create_client = _create_client  # type: ignore[method-assign]

"""Emitting to Socket.IO rooms from any process.

Every daphne process runs the Socket.IO server with an AsyncRedisManager on one Redis pub/sub
channel; an emit anywhere is published there and delivered by whichever process holds the room's
sockets. A Celery worker has no server: it publishes through a write-only manager on the same
channel. Pub/sub channels are shared by all logical databases of a Redis server, so a dedicated
channel name is what keeps ours apart.
"""

from __future__ import annotations

import threading
from typing import Any

import socketio
from django.conf import settings

CHANNEL = "botsite:socketio"
NAMESPACE = "/"

_lock = threading.Lock()
_writer: socketio.RedisManager | None = None


def redis_url() -> str:
    """REDIS_URL as is: python-socketio's managers accept `redis://` and `unix://` forms."""
    return str(settings.REDIS_URL)


def server_manager() -> socketio.AsyncRedisManager:
    """The manager of the daphne processes' server: publishes and listens."""
    return socketio.AsyncRedisManager(
        redis_url(),
        channel=CHANNEL,
        # redis-py 8's default 5 s socket timeout would break the idle pub/sub listener.
        redis_options={"socket_timeout": None, "socket_connect_timeout": 5, "health_check_interval": 30},
    )


def _write_only() -> socketio.RedisManager:
    global _writer
    with _lock:
        if _writer is None:
            _writer = socketio.RedisManager(redis_url(), channel=CHANNEL, write_only=True)
        return _writer


def emit_to_room(room: str, event: str, data: dict[str, Any]) -> None:
    """From a worker (sync code): send `event` to every socket in `room`, on any daphne process."""
    _write_only().emit(event, data, namespace=NAMESPACE, room=room)

"""The one place that sends events to connected clients, from web processes and workers alike.

Synchronous callers (services, Celery tasks) hand coroutines to one long-lived event loop per
process, so the channel layer keeps its Redis connections instead of opening one per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
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

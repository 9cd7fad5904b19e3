"""channels_redis's pub/sub layer with each process's subscriptions batched.

Every socket subscribes twice when it opens (its own channel and its conversation's group) and
unsubscribes twice when it closes. channels_redis sends each as its own command under one lock
per process, so with thousands of sockets opening at once they queue one round trip at a time
on a busy event loop (measured: handshakes waiting for tens of seconds at 5,000 sockets). Here
the subscribe and unsubscribe calls that queue up meanwhile go out as one SUBSCRIBE or
UNSUBSCRIBE with many channels, in the order they were asked for.

While the process has no subscription, the receive loop waits for one (channels_redis naps
100 ms at a time): the first messages of a process's first sockets, or of a socket opening after
all others closed, waited for the end of that nap, up to 100 ms (docs/performance.md).

The receive loop hands on every message already read from the socket at once: redis-py 8's
path for one pub/sub message (a health check, a retry wrapper, a read timeout, a message dict)
was 13 % of daphne's CPU in the flow benchmark, while one socket read under load holds dozens.

Built on channels-redis 4.3's `RedisSingleShardConnection` and redis-py 8.1's hiredis parser
internals (both pinned in requirements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
    _wrap_close,
)
from channels_redis.utils import decode_hosts
from redis._parsers.hiredis import NOT_ENOUGH_DATA

logger = logging.getLogger(__name__)


class _BatchedShard(RedisSingleShardConnection):  # type: ignore[misc]
    # With nothing subscribed, every subscription wakes the receive loop at once; it also looks
    # again after this long, as channels_redis does, in case anything subscribes past `_apply`.
    IDLE_WAIT = 0.1

    def __init__(self, host: dict[str, Any], channel_layer: RedisPubSubLoopLayer) -> None:
        super().__init__(host, channel_layer)
        self._ops: list[tuple[bool, str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Future[None] | None = None
        self._subscribed_now = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        await self._queue(True, channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._queue(False, channel)

    async def _queue(self, subscribe: bool, channel: str) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ops.append((subscribe, channel, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        # A caller cancelled meanwhile (a socket closing) still has its change applied.
        await done

    async def _flush(self) -> None:
        while self._ops:
            ops, self._ops = self._ops, []
            try:
                async with self._lock:
                    self._ensure_redis()
                    self._ensure_receiver()
                    start = 0
                    while start < len(ops):
                        end = start
                        while end < len(ops) and ops[end][0] == ops[start][0]:
                            end += 1
                        await self._apply(ops[start:end])
                        start = end
            except BaseException as exc:  # never leave a caller waiting
                for _, _, done in ops:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
                if not isinstance(exc, Exception):
                    raise

    async def _apply(self, ops: list[tuple[bool, str, asyncio.Future[None]]]) -> None:
        """One command for a run of subscribes (or unsubscribes); callers get its outcome."""
        subscribe = ops[0][0]
        changed = []
        for _, channel, _ in ops:
            if subscribe and channel not in self._subscribed_to:
                self._subscribed_to.add(channel)
                changed.append(channel)
            elif not subscribe and channel in self._subscribed_to:
                self._subscribed_to.remove(channel)
                changed.append(channel)
        try:
            if changed:
                command = self._pubsub.subscribe if subscribe else self._pubsub.unsubscribe
                await command(*changed)
        except Exception as exc:
            if subscribe:
                self._subscribed_to.difference_update(changed)  # so that a retry subscribes again
            for _, _, done in ops:
                if not done.done():
                    done.set_exception(exc)
            return
        if subscribe and changed:
            self._subscribed_now.set()
        for _, _, done in ops:
            if not done.done():
                done.set_result(None)

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                    await self._receive_buffered()
                else:
                    self._subscribed_now.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._subscribed_now.wait(), self.IDLE_WAIT)
            except (asyncio.CancelledError, TimeoutError, GeneratorExit):
                raise
            except BaseException:
                logger.exception("Unexpected exception in the channel layer's receive loop")
                await asyncio.sleep(1)

    async def _receive_buffered(self) -> None:
        """Every complete reply the parser already holds: messages straight to their channels,
        anything else (subscription changes, pongs) through redis-py, which keeps its state."""
        connection = self._pubsub.connection if self._pubsub else None
        reader = getattr(getattr(connection, "_parser", None), "_reader", None)
        if reader is None:  # not connected, or the pure-Python parser
            return
        while True:
            response = reader.gets()
            if response is NOT_ENOUGH_DATA:
                return
            if isinstance(response, Exception):
                raise response
            if len(response) == 3 and response[0] == b"message":
                self._receive_message({"channel": response[1], "data": response[2]})
            else:
                self._receive_message(await self._pubsub.handle_message(response, ignore_subscribe_messages=True))


class _BatchedLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, hosts: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(hosts, *args, **kwargs)
        self._shards = [_BatchedShard(host, self) for host in decode_hosts(hosts)]


class PubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """`channels_redis.pubsub.RedisPubSubChannelLayer`, subscriptions batched per process."""

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _BatchedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

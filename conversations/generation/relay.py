"""Where a worker process's streamed answers run, and how their pieces leave it.

Per token, the first version cost a Redis append, a group publish (three round trips and a Lua
call) and, in daphne, a channel-layer receive per socket (four more): ~2.5 ms of server CPU per
token, so 100 streams at 50 tokens a second needed ~12 cores. Now:

- every answer of the process streams on ONE event loop (`run`; a Celery thread only waits for
  it), instead of one event loop per answer thread fighting for the GIL;
- pieces are delivered in batches that form by themselves (`Relay`): whatever arrived, from any
  stream, while the previous delivery was in flight (or in the last MIN_INTERVAL) goes out in
  the next one. With the pub/sub channel layer on the server that keeps the logs (the default)
  a delivery is ONE command, a Lua script appending to the logs and then publishing one event
  per conversation; otherwise the appends go in one pipeline, then the channel-layer messages
  (`publish.StreamPiecePublisher`, which on the list-based layer also holds pieces back while a
  web process has not taken the previous message). Idle, a piece leaves at once; under load
  deliveries get larger, not more frequent. A piece is in the log before it is published (late
  readers and gap repair rely on that), and `drain` returns only once a stream's pieces are out,
  so the stored answer's event always follows them;
- the heartbeats of every turn being answered come from one thread (`Heartbeats`), so a busy
  loop cannot make a live answer look dead to a redelivered task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings

from botsite.eventloop import LoopLocal, new_event_loop
from conversations.generation import streams
from conversations.publish import StreamPiecePublisher, group_name, publish_messages, pubsub_messages

logger = logging.getLogger(__name__)

StreamKey = tuple[Any, str]  # (conversation id, stream id)
# Seconds between two deliveries of a process's pieces, at least (setting STREAM_DELIVERY_INTERVAL).
# A delivery is one Redis command: at 1.5 ms instead of 3, chunk p99 with 10 streams fell from
# 3.9-4.8 to 2.5 ms for the same CPU; at 1 ms instead of 1.5, 100 streams' p50 fell from 1.5 to
# 0.9 ms and p99 from 4.7-6.6 to 4.3-5.1, for the same CPU (deliveries are then paced by the
# loop's own round, not by this; docs/performance.md).
MIN_INTERVAL = 0.001


class DeliveryFailed(Exception):
    """The pieces of a stream could not be stored or published."""


class Relay:
    """Collects the pieces of all streams on this loop and delivers them in batches."""

    def __init__(self) -> None:
        self.pending: dict[StreamKey, tuple[int, list[str]]] = {}
        self.in_flight: dict[StreamKey, tuple[int, list[str]]] = {}
        self.failed: dict[StreamKey, BaseException] = {}
        # streams whose log has its expiry → their log's key
        self.started: dict[StreamKey, str] = {}
        self.wake = asyncio.Event()
        self.delivered = asyncio.Condition()
        self.client = streams.async_client()
        self.append_and_publish = self.client.register_script(APPEND_AND_PUBLISH)
        self.same_server: dict[int, bool] = {}  # channel-layer shard → whether it is our server
        self.publisher = StreamPiecePublisher()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="stream-relay")

    def put(self, conversation_id: Any, stream_id: str, index: int, piece: str) -> None:
        """Queue piece number `index` of a stream (indexes of a stream come in order, from 0)."""
        key = (conversation_id, stream_id)
        if key in self.failed:
            raise DeliveryFailed(f"stream {stream_id}") from self.failed[key]
        waiting = self.pending.get(key)
        if waiting is None:
            self.pending[key] = (index, [piece])
        else:
            waiting[1].append(piece)
        self.wake.set()

    async def drain(self, conversation_id: Any, stream_ids: list[str]) -> None:
        """Wait until every piece queued for these streams is stored and published."""
        keys = [(conversation_id, stream_id) for stream_id in stream_ids]
        async with self.delivered:
            await self.delivered.wait_for(lambda: all(k in self.failed or not self._undelivered(k) for k in keys))
        for key in keys:
            if key in self.failed:
                raise DeliveryFailed(f"stream {key[1]}") from self.failed[key]

    def _undelivered(self, key: StreamKey) -> bool:
        return key in self.pending or key in self.in_flight or self.publisher.holds(group_name(key[0]))

    def forget(self, conversation_id: Any, stream_ids: list[str]) -> None:
        for stream_id in stream_ids:
            key = (conversation_id, stream_id)
            self.failed.pop(key, None)
            self.started.pop(key, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = float(getattr(settings, "STREAM_DELIVERY_INTERVAL", MIN_INTERVAL))
        last = 0.0
        while True:
            await self.wake.wait()
            # At most one delivery per interval: each is a message every web process receives
            # one at a time (channels_redis: three round trips each), so under load they must
            # grow rather than multiply. A piece after a quiet spell leaves at once.
            pause = last + interval - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self.wake.clear()
            last = loop.time()
            batch, self.pending = self.pending, {}
            if not batch and not self.publisher.held:
                continue
            self.in_flight = batch
            try:
                await self._deliver(batch)
            except Exception as exc:
                logger.warning("delivering %d stream(s) failed", len(batch), exc_info=True)
                for key in batch:
                    self.failed[key] = exc
                # Pieces are in the logs (or their streams failed); clients repair from there.
                self.publisher.held.clear()
            finally:
                self.in_flight = {}
                if self.publisher.held:
                    loop.call_later(interval, self.wake.set)  # try the held pieces again
                async with self.delivered:
                    self.delivered.notify_all()

    async def _deliver(self, batch: dict[StreamKey, tuple[int, list[str]]]) -> None:
        by_conversation: dict[Any, list[list[Any]]] = {}
        logs: list[tuple[str, bool, list[str]]] = []  # (log key, new, pieces)
        new: dict[StreamKey, str] = {}
        for key, (first, pieces) in batch.items():
            log_key = self.started.get(key)
            if log_key is None:
                log_key = new[key] = streams.tokens_key(*key)
            logs.append((log_key, key in new, pieces))
            by_conversation.setdefault(key[0], []).append([key[1], first, pieces])
        layer = get_channel_layer()
        if by_conversation and isinstance(layer, RedisPubSubChannelLayer):
            by_shard = pubsub_messages(layer, self.publisher.pubsub_batches(by_conversation))
            if len(by_shard) == 1 and self._is_our_server(by_shard[0][0]):
                await self._append_and_publish(logs, by_shard[0][1])
            else:
                await self._append(logs)
                await publish_messages(by_shard)
        else:
            await self._append(logs)
            await self.publisher.publish(by_conversation)
        self.started.update(new)

    def _is_our_server(self, shard: Any) -> bool:
        """Whether a channel-layer shard is the server that keeps the stream logs (the default:
        one Redis for everything)."""
        same = self.same_server.get(id(shard))
        if same is None:
            ours, theirs = self.client.connection_pool.connection_kwargs, shard._redis.connection_pool.connection_kwargs
            same = self.same_server[id(shard)] = all(ours.get(k) == theirs.get(k) for k in SERVER_KWARGS)
        return same

    async def _append(self, logs: list[tuple[str, bool, list[str]]]) -> None:
        if not logs:
            return
        pipe = self.client.pipeline(transaction=False)
        for log_key, is_new, pieces in logs:
            pipe.rpush(log_key, *pieces)
            if is_new:
                pipe.expire(log_key, streams.KEEP_SECONDS)  # once per stream, not per piece
        await pipe.execute()

    async def _append_and_publish(
        self, logs: list[tuple[str, bool, list[str]]], messages: list[tuple[str, bytes]]
    ) -> None:
        args: list[Any] = [len(logs), streams.KEEP_SECONDS]
        for _, is_new, pieces in logs:
            args += [len(pieces), "1" if is_new else "0", *pieces]
        for channel, payload in messages:
            args += [channel, payload]
        await self.append_and_publish(keys=[log_key for log_key, _, _ in logs], args=args)


# A delivery in one command (one round trip, one reply) when the channel layer and the stream
# logs share a server: each stream's pieces appended to its log (its expiry set when it is new),
# then each conversation's event PUBLISHed, so a piece is in the log before anyone hears of it.
APPEND_AND_PUBLISH = """
local at = 3
for i = 1, tonumber(ARGV[1]) do
    local count = tonumber(ARGV[at])
    local new = ARGV[at + 1] == '1'
    at = at + 2
    for first = at, at + count - 1, 1000 do
        redis.call('RPUSH', KEYS[i], unpack(ARGV, first, math.min(first + 999, at + count - 1)))
    end
    if new then
        redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
    end
    at = at + count
end
while at < #ARGV do
    redis.call('PUBLISH', ARGV[at], ARGV[at + 1])
    at = at + 2
end
return 1
"""
# What makes two redis-py connection pools talk to the same server.
SERVER_KWARGS = ("host", "port", "path", "username", "password")


# --- The process's streaming loop ---------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_relays: LoopLocal[Relay] = LoopLocal(Relay)
_lock = threading.Lock()


def streaming_loop() -> asyncio.AbstractEventLoop:
    """An event loop in a daemon thread, started lazily and again after a fork."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or not _loop.is_running():
            loop = new_event_loop()
            threading.Thread(target=loop.run_forever, name="generation-loop", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
            _relays.clear()
        return _loop


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a streaming coroutine on the process's streaming loop and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coroutine, streaming_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # interrupted while waiting (e.g. a time limit): the stream must not go on alone
        raise


def relay() -> Relay:
    """The relay of the running loop (in the streaming loop: one per process)."""
    return _relays.get()


# --- Heartbeats -------------------------------------------------------------------------------


class Heartbeats:
    """Keeps the alive keys of the process's running turns fresh, all in one pipeline, from a
    thread of its own."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.lock = threading.Lock()
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="generation-heartbeats", daemon=True).start()

    def add(self, key: str) -> None:
        with self.lock:
            self.keys.add(key)
            self._beat([key])

    def discard(self, key: str) -> None:
        with self.lock:
            self.keys.discard(key)

    def _beat(self, keys: list[str]) -> None:
        seconds = streams.heartbeat_seconds()
        with streams.sync_client() as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, "1", ex=seconds)
            pipe.execute()

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(0.1)  # short naps: a changed heartbeat setting takes effect at once
            if time.monotonic() - last < max(0.2, streams.heartbeat_seconds() / 3):
                continue
            last = time.monotonic()
            try:
                with self.lock:
                    if self.keys:
                        self._beat(list(self.keys))
            except Exception:
                logger.warning("heartbeat failed", exc_info=True)


_heartbeats: Heartbeats | None = None


@contextmanager
def heartbeat(conversation_id: Any, user_seq: int) -> Iterator[None]:
    """While the block runs, the turn's alive key stays fresh (its first beat before it starts)."""
    global _heartbeats
    with _lock:
        if _heartbeats is None or _heartbeats.pid != os.getpid():
            _heartbeats = Heartbeats()
        beats = _heartbeats
    key = streams.alive_key(conversation_id, user_seq)
    beats.add(key)
    try:
        yield
    finally:
        beats.discard(key)

"""Small pieces every protocol adapter shares: headers, query strings, rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import DatabaseSyncToAsync
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.core.cache import cache

from botsite.eventloop import LoopLocal
from conversations.publish import group_name

T = TypeVar("T")


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin1"))
    return None


def cookie(scope: dict[str, Any], name: str) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def query_param(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get(name)
    return values[0] if values else None


def is_secure(scope: dict[str, Any]) -> bool:
    return scope.get("scheme") in {"wss", "https"} or header(scope, b"x-forwarded-proto") == "https"


class RateLimiter:
    """At most `limit` events in any `window` seconds (a sliding log; small limits only).

    A list, not a deque: every open socket holds one, an empty deque costs ~600 bytes and an
    empty list 56, and trimming a log of at most `limit` entries from the front is cheap."""

    __slots__ = ("clock", "events", "limit", "window")

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self.events: list[float] = []

    def allow(self) -> bool:
        now = self.clock()
        expired = 0
        while expired < len(self.events) and now - self.events[expired] >= self.window:
            expired += 1
        if expired:
            del self.events[:expired]
        if self.limit and len(self.events) >= self.limit:
            return False
        self.events.append(now)
        return True


MAX_JSON_DEPTH = 32


class NulCharacter(ValueError):
    """A string in the message holds U+0000."""


def contains_nul(value: Any) -> bool:
    """Whether any string in `value` (keys included) holds U+0000, which PostgreSQL cannot store
    in text or jsonb: refused at the door on every protocol, so both databases behave alike.
    Iterative, so deep nesting cannot exhaust the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def loads_json(raw: str) -> Any:
    """json.loads, refusing nesting deeper than MAX_JSON_DEPTH with ValueError first.

    No client message of ours nests deeply, and letting the C decoder hit the recursion limit
    has been seen to leave CPython 3.11's recursion accounting off for the rest of the process.
    """
    if raw.count("[") + raw.count("{") > MAX_JSON_DEPTH and _nesting_depth(raw) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    data = json.loads(raw)
    if contains_nul(data):
        raise NulCharacter("text must not contain NUL characters")
    return data


def _nesting_depth(raw: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def visitor_rate_allows(scope: str, brand_id: int, visitor: str, limit: int, window: float = 60.0) -> bool:
    """At most `limit` messages per `window` seconds per visitor, across processes and connections.

    Two fixed buckets in the cache (Redis) weighted into a sliding window: the previous bucket
    counts for the part of it still inside the window. A refused message is taken back out, so
    it costs nothing.
    """
    if limit <= 0:
        return True
    now = time.time()
    bucket = int(now // window)
    visitor_key = hashlib.sha256(visitor.encode()).hexdigest()[:32]
    current_key = f"{scope}:rate:{brand_id}:{visitor_key}:{bucket}"
    previous_key = f"{scope}:rate:{brand_id}:{visitor_key}:{bucket - 1}"
    cache.add(current_key, 0, timeout=int(window * 2) + 1)
    current = cache.incr(current_key)
    previous = cache.get(previous_key) or 0
    elapsed = (now % window) / window
    if previous * (1 - elapsed) + current > limit:
        cache.decr(current_key)
        return False
    return True


def db_async(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Run a database function from async code on the thread pool.

    Channels' `database_sync_to_async` is thread-sensitive: every call of every connection in a
    daphne process queues for one thread, which caps a process at a few hundred database calls a
    second. Our service functions hold no thread-bound state, so any pool thread will do.
    """
    return DatabaseSyncToAsync(func, thread_sensitive=False)  # type: ignore[return-value]


class _Inbox:
    """Stands in for the pub/sub layer's queue of one socket's channel: a message for it goes
    straight, deserialized, into the socket's ASGI input queue, where the consumer's one loop
    reads it. No receive task per socket.

    At most BACKLOG messages wait; a conversation event dropped beyond that is repaired from the
    log like any other gap (the consumers notice it by `seq`)."""

    BACKLOG = 1000
    __slots__ = ("deserialize", "queue")

    def __init__(self, queue: Any, deserialize: Callable[[bytes], Any]) -> None:
        self.queue, self.deserialize = queue, deserialize

    def put_nowait(self, data: bytes) -> None:
        if self.queue.qsize() < self.BACKLOG:
            self.queue.put_nowait(self.deserialize(data))


Check = Callable[[], Awaitable[bool]]


class LateReplies:
    """Sockets waiting for live events after an input, for all the sockets of one event loop.

    Live events can be lost (a Redis restart, a backlog past the channel layer's expiry); the
    log cannot. After an input a socket asks to be checked in a few seconds; its `check` reads
    the log if nothing arrived and says whether to look again after as long. One loop wakes at
    most once a second for all of them, instead of a task with a timer per input, whose
    cancellation at the next input left a CancelledError, its traceback and frames to the
    cyclic garbage collector every step."""

    def __init__(self) -> None:
        self.due: dict[object, tuple[float, float, Check]] = {}
        self.running: dict[object, asyncio.Task[None]] = {}
        self.loop_task: asyncio.Task[None] | None = None

    def watch(self, key: object, seconds: float, check: Check) -> None:
        """Call `check` in `seconds` (and again as long as it returns True); replaces any
        earlier watch of `key`."""
        loop = asyncio.get_running_loop()
        self.due[key] = (loop.time() + seconds, seconds, check)
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = loop.create_task(self._run())

    def forget(self, key: object) -> None:
        self.due.pop(key, None)
        running = self.running.pop(key, None)
        if running is not None:
            running.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.due:
            now = loop.time()
            await asyncio.sleep(max(0.0, min(1.0, min(deadline for deadline, _, _ in self.due.values()) - now)))
            now = loop.time()
            for key, (deadline, seconds, check) in list(self.due.items()):
                if deadline <= now and key not in self.running:
                    del self.due[key]
                    self.running[key] = loop.create_task(self._check(key, seconds, check))

    async def _check(self, key: object, seconds: float, check: Check) -> None:
        try:
            again = await check()
        finally:
            self.running.pop(key, None)
        if again and key not in self.due:
            self.watch(key, seconds, check)


# The LateReplies of the running event loop.
late_replies = LoopLocal(LateReplies).get


class ConversationConsumer(AsyncWebsocketConsumer):
    """Base of the WebSocket adapters: a socket that follows one conversation's group at a time.

    Messages are dispatched straight to their handler: Channels would run
    `close_old_connections` on its one thread-sensitive database thread before every message,
    including every streamed chunk, so all sockets of a process would queue on that thread. Our
    handlers reach the database only through `db_async`, which manages connections on the pool
    thread it runs on.
    """

    conversation_id: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' loop, with the channel layer's messages arriving in the socket's own input
        queue (`_Inbox`): one waiting coroutine per idle socket instead of a receive task, a queue
        and the tasks `await_many_dispatch` keeps. Falls back to Channels' loop when the server's
        `receive` is not a queue's `get` or the layer is not the Redis pub/sub one."""
        queue = getattr(receive, "__self__", None)
        layer = get_channel_layer(self.channel_layer_alias)
        if not (
            callable(getattr(queue, "put_nowait", None))
            and callable(getattr(queue, "qsize", None))
            and isinstance(layer, RedisPubSubChannelLayer)
        ):
            await super().__call__(scope, receive, send)
            return
        self.scope = scope
        self.channel_layer = layer
        self.base_send = send
        # The socket's name is only ever a member of its conversation's group (and the address
        # an input's error is meant for); nothing sends to it directly, so it is registered in
        # this process without a Redis subscription of its own (`new_channel` would subscribe
        # it, and unsubscribe it at close: two commands and a queue per socket for nothing).
        loop_layer = layer._get_layer()  # channels-redis 4.3: channel name → its queue
        self.channel_name = f"{loop_layer.prefix}specific.{uuid.uuid4().hex}"
        loop_layer.channels[self.channel_name] = _Inbox(queue, layer.deserialize)
        try:
            while True:
                message = await receive()
                await self.dispatch(message)
                del message  # an idle socket should not keep its last event alive
        except StopConsumer:
            pass
        finally:
            loop_layer.channels.pop(self.channel_name, None)

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' version ends with `close_old_connections` on its one thread-sensitive
        # database thread: a thread hop per closing socket that every socket of the process
        # queues for (8 % of daphne's CPU in the flow benchmark), for connections our handlers
        # never hold (they use `db_async`). Our consumers join no class-level `groups`.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        late_replies().forget(self)
        if self.conversation_id is not None:
            await self.channel_layer.group_discard(group_name(self.conversation_id), self.channel_name)

"""Three patches to daphne 4.2 and the autobahn under it (harmless when daphne is not the server):

- Let daphne send the `headers` of an ASGI `websocket.accept` (the spec allows them). daphne
  drops them, so the assistant's session cookie could not be set in the WebSocket handshake as the
  seed does. autobahn, underneath daphne, accepts `(subprotocol, headers)` from the handshake
  callback; this passes them through.
- Give each WebSocket connection a small input queue instead of an `asyncio.Queue`, whose four deques cost
  ~3 KiB per open socket whether anything waits in them or not (see docs/performance.md, idle).
- Unless autobahn logs at debug level, skip building its debug messages' arguments: it
  pretty-prints its whole configuration for every new connection and colours type names for
  every frame it sends, whether the message is logged or not (~10 % of daphne's CPU, profiled).
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import Any


class InputQueue:
    """What daphne needs of a connection's input queue: `put_nowait` from the server, `get` for
    the application (ASGI has one reader per connection), `qsize`. Holds no deque while empty."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("one reader at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


def install() -> None:
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server
        return
    if getattr(WebSocketProtocol, "_botsite_headers_patch", False):
        return
    original = WebSocketProtocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.accept" and message.get("headers") and hasattr(self, "handshake_deferred"):
            headers: dict[str, list[str]] = {}
            for name, value in message["headers"]:
                headers.setdefault(name.decode("latin1"), []).append(value.decode("latin1"))
            self.handshake_deferred.callback((message.get("subprotocol"), headers))
            del self.handshake_deferred
            return
        original(self, message)

    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol._botsite_headers_patch = True

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> InputQueue | asyncio.Queue[Any] | None:
        # daphne 4.2.3's Server.create_application with InputQueue for asyncio.Queue.
        assert "application_instance" not in self.connections[protocol]
        # HTTP keeps daphne's queue: Django and Socket.IO may read an HTTP request's input from two tasks.
        input_queue: InputQueue | asyncio.Queue[Any] = (
            InputQueue() if scope.get("type") == "websocket" else asyncio.Queue()
        )
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    Server.create_application = create_application
    _skip_autobahn_debug_arguments()


def _skip_autobahn_debug_arguments() -> None:
    import txaio
    from autobahn.twisted import websocket
    from autobahn.websocket import protocol

    if txaio.get_global_log_level() in {"debug", "trace"}:  # type: ignore[attr-defined]
        return

    def nothing(*args: Any, **kwargs: Any) -> str:
        return ""

    for module in (protocol, websocket):
        for name in ("pformat", "hltype", "hlval"):
            if hasattr(module, name):
                setattr(module, name, nothing)

"""Let daphne send the `headers` of an ASGI `websocket.accept` (the spec allows them).

daphne 4.2 drops them, so the assistant's session cookie could not be set in the WebSocket
handshake as the seed does. autobahn, underneath daphne, accepts `(subprotocol, headers)` from
the handshake callback; this passes them through. Harmless when daphne is not the server.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    try:
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

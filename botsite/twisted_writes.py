"""Send a TCP connection's data at once when nothing is waiting to be sent (daphne's Twisted).

Twisted's `transport.write` never sends: it buffers, registers the socket for writability, and
on the reactor's next round sends and unregisters it. For a server that writes one small
WebSocket frame at a time, that is two `epoll_ctl` calls and a round of Twisted's dispatch per
frame, and the frame leaves one loop round late: behind whatever else that round holds (every
other piece of a delivery, every other socket's input). asyncio's transports try the socket
first and buffer only what it does not take; this does the same for Twisted's plain TCP
connections. Whenever anything is buffered (a slow reader, a half-written frame, a closing
connection, TLS) the write takes Twisted's own path, so the order of bytes is unchanged and
Twisted keeps handling full buffers, errors and producers.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    try:
        from twisted.internet import tcp
    except ImportError:  # not served by Twisted
        return
    if getattr(tcp.Connection, "_botsite_direct_write", False):
        return
    buffered_write = tcp.Connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            type(data) is not bytes
            or self.TLS
            or not self.connected
            or self.disconnecting
            or self._writeDisconnecting
            or self._writeDisconnected
            or self._tempDataLen
            or len(self.dataBuffer) != self.offset
            or len(data) > self.SEND_LIMIT
        ):
            buffered_write(self, data)
            return
        try:
            sent = self.socket.send(data)
        except OSError:
            # Full (EAGAIN), interrupted, or broken: Twisted's path buffers the data and, for a
            # broken connection, finds the error on its next write and closes as it always does.
            sent = 0
        if sent < len(data):
            buffered_write(self, data[sent:])

    tcp.Connection.write = write  # type: ignore[method-assign]
    tcp.Connection._botsite_direct_write = True  # type: ignore[attr-defined]

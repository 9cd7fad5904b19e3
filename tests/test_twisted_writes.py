"""botsite.twisted_writes: Twisted's TCP connections send at once when nothing is buffered, and
fall back to Twisted's buffer, in order, when the socket does not take everything."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from botsite import twisted_writes


class Reactor:
    """What a connection asks of its reactor when it buffers: to be told when it may write."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, writer: Any) -> None:
        if writer not in self.writers:
            self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        if writer in self.writers:
            self.writers.remove(writer)


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Any:
    # Patched for this test only: the test process's other Twisted users keep Twisted's own write.
    monkeypatch.setattr(tcp.Connection, "write", tcp.Connection.write)
    monkeypatch.setattr(tcp.Connection, "_botsite_direct_write", False, raising=False)
    twisted_writes.install()
    ours, peer = socket.socketpair()
    reactor = Reactor()
    conn = tcp.Connection(ours, Protocol(), reactor=reactor)
    conn.connected = True
    peer.setblocking(False)
    yield conn, peer, reactor
    ours.close()
    peer.close()


def read_all(peer: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_write_is_sent_at_once_without_the_reactor(connection: Any) -> None:
    conn, peer, reactor = connection
    conn.write(b"frame one")
    conn.write(b"frame two")
    assert read_all(peer) == b"frame oneframe two"
    assert reactor.writers == []  # never registered: no reactor round, no epoll_ctl


def test_what_the_socket_does_not_take_waits_in_order(connection: Any) -> None:
    conn, peer, reactor = connection
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frames = [bytes([index % 251]) * 1000 for index in range(2000)]  # 2 MB: far beyond the buffer
    for frame in frames:
        conn.write(frame)
    assert reactor.writers == [conn]  # the rest waits for the reactor, as Twisted does it
    received = read_all(peer)
    while reactor.writers:
        conn.doWrite()
        received += read_all(peer)
    assert received == b"".join(frames)
    conn.write(b"after")  # the buffer is empty again: straight out
    assert read_all(peer) == b"after"
    assert reactor.writers == []


def test_a_closing_connection_keeps_twisteds_path(connection: Any) -> None:
    conn, peer, reactor = connection
    conn.disconnecting = True
    conn.write(b"last words")
    assert read_all(peer) == b""
    assert reactor.writers == [conn]

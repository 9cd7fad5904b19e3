"""Where a streamed piece spends its time, for the streaming part (installed by bench/stream_settings.py).

The issue measures chunk delivery "from the worker's emit to the client's receipt". The emit is
the moment the worker hands a piece of the model's answer to its relay (`Relay.put`): from there
on the piece is the stack's to store and deliver. The wire format has no room for a time stamp
(the brand chat's `chunk` is the seed's), so in the benchmark's stack only this app writes down,
with `time.time()`:

- `emit`: the worker's `Relay.put` of a piece;
- `delivery`: each relay delivery's start and end (the log appends and the publish), and its size;
- `web`: the web process's handling of a piece (`BrandChatConsumer._delta`), before its frame
  is written.

Each process appends JSON lines to `BENCH_EMIT_LOG.<pid>` from a thread that flushes every
100 ms, so the hot path pays a list append.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from typing import Any

from django.apps import AppConfig

_pending: list[tuple[Any, ...]] = []
_flushing: set[int] = set()  # the processes (pids) whose flushing thread runs


def _note(*entry: Any) -> None:
    if os.getpid() not in _flushing:
        _flushing.add(os.getpid())
        threading.Thread(target=_flush_forever, name="bench-emit-log", daemon=True).start()
    _pending.append(entry)


def _flush_forever() -> None:
    path = f"{os.environ['BENCH_EMIT_LOG']}.{os.getpid()}"
    while True:
        time.sleep(0.1)
        if not _pending:
            continue
        taken = _pending[:]
        del _pending[: len(taken)]
        with open(path, "a", encoding="utf-8") as out:
            out.writelines(json.dumps(entry) + "\n" for entry in taken)


class EmitLogConfig(AppConfig):
    name = "bench.emit_log"
    label = "bench_emit_log"

    def ready(self) -> None:
        from conversations.generation.relay import Relay
        from conversations.protocols.brand_chat import BrandChatConsumer

        original_put, original_deliver, original_delta = Relay.put, Relay._deliver, BrandChatConsumer._delta

        def put(self: Relay, conversation_id: Any, stream_id: str, index: int, piece: str) -> None:
            _note("emit", time.time(), piece)
            original_put(self, conversation_id, stream_id, index, piece)

        async def deliver(self: Relay, batch: dict[Any, tuple[int, list[str]]]) -> None:
            start = time.time()
            await original_deliver(self, batch)
            _note("delivery", start, time.time(), sum(len(pieces) for _, pieces in batch.values()))

        async def delta(self: BrandChatConsumer, stream_id: str, index: int, piece: str) -> None:
            _note("web", time.time(), piece)
            await original_delta(self, stream_id, index, piece)

        Relay.put = put  # type: ignore[method-assign]
        Relay._deliver = deliver  # type: ignore[method-assign]
        BrandChatConsumer._delta = delta  # type: ignore[method-assign]


def read(path: str) -> list[list[Any]]:
    """Every process's lines written so far."""
    entries: list[list[Any]] = []
    for name in glob.glob(f"{glob.escape(path)}.*"):
        with open(name, encoding="utf-8") as lines:
            for line in lines:
                if not line.endswith("\n"):
                    break  # a flush still being written: its pieces were not this run's anyway
                entries.append(json.loads(line))
    return entries


def forget(path: str) -> None:
    for name in glob.glob(f"{glob.escape(path)}.*"):
        os.unlink(name)

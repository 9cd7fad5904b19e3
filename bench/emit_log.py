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

Each process keeps its entries in memory (the hot path pays a tuple and a list append) and writes
them only when the benchmark asks, after the load: `flush(path, n)` writes the number `n` to
`<path>.flush`, which a thread of each process looks for every 100 ms, and each writes what it
holds to `<path>.<pid>.<n>`. Writing them during the run, as JSON every 100 ms, held the GIL of
the very processes being timed for milliseconds at a time (5,000 pieces a second at 100 streams)
and showed up in the chunk latency it was measuring.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.apps import AppConfig

_pending: list[tuple[Any, ...]] = []
_serving: set[int] = set()  # the processes (pids) whose thread answers flush requests


def _note(*entry: Any) -> None:
    if os.getpid() not in _serving:
        _serving.add(os.getpid())
        threading.Thread(target=_serve_flushes, name="bench-emit-log", daemon=True).start()
    _pending.append(entry)


def _requested(path: str) -> int:
    try:
        return int(Path(f"{path}.flush").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0


def _serve_flushes() -> None:
    path = os.environ["BENCH_EMIT_LOG"]
    done = _requested(path)  # a request made before this process noted anything is not for it
    while True:
        time.sleep(0.1)
        wanted = _requested(path)
        if wanted <= done:
            continue
        taken = _pending[:]
        del _pending[: len(taken)]
        out = f"{path}.{os.getpid()}.{wanted}"
        with open(f"{out}.tmp", "w", encoding="utf-8") as lines:
            lines.writelines(json.dumps(entry) + "\n" for entry in taken)
        os.replace(f"{out}.tmp", out)  # a reader sees all of a process's entries or none
        done = wanted


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


def flush(path: str, number: int, timeout: float = 5.0) -> None:
    """Ask every process that noted something to write it down as flush `number` (larger than
    the last), and wait until their files have appeared and no more appear for half a second."""
    Path(f"{path}.flush").write_text(str(number), encoding="utf-8")
    deadline, seen, stable_since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        found = len(glob.glob(f"{glob.escape(path)}.*.{number}"))
        if found != seen:
            seen, stable_since = found, time.monotonic()
        elif found and time.monotonic() - stable_since >= 0.5:
            return
        time.sleep(0.05)


def read(path: str, number: int) -> list[list[Any]]:
    """Every process's entries of flush `number`."""
    entries: list[list[Any]] = []
    for name in glob.glob(f"{glob.escape(path)}.*.{number}"):
        with open(name, encoding="utf-8") as lines:
            entries += [json.loads(line) for line in lines]
    return entries


def forget(path: str) -> None:
    """Remove every flush's files and the request (the processes remember the last they served)."""
    for name in glob.glob(f"{glob.escape(path)}.*"):
        os.unlink(name)

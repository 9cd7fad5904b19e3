"""How long SQLite writers wait for each other: SQLite's busy handler against our writer lock.

Three processes (as daphne and two pool processes are) take turns writing one SQLite file in
WAL mode: each transaction begins IMMEDIATE, inserts a row, computes for a random time around
`hold_ms` with the lock held (as a worker batch does), commits and pauses. Measured: the wait
from asking for the lock to holding it, and how many transactions committed in the time. The
same loop runs with `botsite.sqlite.base.WriterLock` taken before BEGIN and without it.
"""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import percentiles

WRITERS = 3
SECONDS = 4.0
HOLD_MS = (3.0, 10.0)


def _writer(path: str, use_lock: bool, hold_ms: float, seconds: float, seed: int, out: Any) -> None:
    from botsite.sqlite.base import WriterLock

    rng = random.Random(seed)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA synchronous=NORMAL")
    lock = WriterLock(f"{path}.writer-lock", 30) if use_lock else None
    waits: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        asked = time.perf_counter()
        if lock is not None:
            lock.acquire()
        connection.execute("BEGIN IMMEDIATE")
        waits.append((time.perf_counter() - asked) * 1000)
        connection.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
        busy_until = time.perf_counter() + rng.uniform(0.5, 2 * hold_ms) / 1000
        while time.perf_counter() < busy_until:
            pass
        connection.execute("COMMIT")
        if lock is not None:
            lock.release()
        time.sleep(rng.uniform(0, 2 * hold_ms) / 1000)
    out.put(waits)


def _one(use_lock: bool, hold_ms: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="botsite-bench-lock-") as folder:
        path = str(Path(folder) / "db.sqlite3")
        setup = sqlite3.connect(path)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        setup.commit()
        setup.close()
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        writers = [
            context.Process(target=_writer, args=(path, use_lock, hold_ms, SECONDS, seed, out))
            for seed in range(WRITERS)
        ]
        for process in writers:
            process.start()
        waits = [wait for _ in writers for wait in out.get()]
        for process in writers:
            process.join()
    return {
        "waiting": "writer lock (flock)" if use_lock else "SQLite busy handler",
        "hold_ms": hold_ms,
        "writers": WRITERS,
        "seconds": SECONDS,
        "commits": len(waits),
        "wait_ms": percentiles(waits),
    }


def run_writers() -> list[dict[str, Any]]:
    return [_one(use_lock, hold_ms) for hold_ms in HOLD_MS for use_lock in (False, True)]

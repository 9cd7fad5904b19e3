"""py-spy against the server while the load runs (`--profile SECONDS`).

One `py-spy record` per daphne and Celery pool process, for a fixed time, written as
speedscope/flamegraph files and a "top functions by own samples" summary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stack import ServerWatch

RESULTS = Path(__file__).resolve().parent / "results"


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


class Profiler:
    def __init__(self, runs: list[tuple[str, int, Path, subprocess.Popen[bytes]]]) -> None:
        self.runs = runs

    @classmethod
    def start(cls, watch: ServerWatch, seconds: float, label: str) -> Profiler | None:
        binary = _py_spy()
        if binary is None:
            print("  py-spy is not installed; no profile", file=sys.stderr)
            return None
        RESULTS.mkdir(exist_ok=True)
        runs = []
        for pid, stats in watch.stats.items():
            # worker-main: with CELERY_POOL=threads the tasks run there; so do the answers worker's.
            if stats.role not in {"daphne", "worker-child", "worker-main", "answers", "streamer"}:
                continue
            out = RESULTS / f"profile-{label}-{stats.role}-{pid}.txt"
            process = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                    # Only samples that hold the GIL: CPU spent in Python, not threads waiting
                    # in a system call (a socket write, SQLite's lock), which would look hot.
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            runs.append((stats.role, pid, out, process))
        return cls(runs)

    def wait(self, top: int = 15) -> list[dict[str, Any]]:
        summaries = []
        for role, pid, out, process in self.runs:
            process.wait()
            if out.exists():
                summary = {"role": role, "pid": pid, "file": out.name, "hot_path": hot_path(out)}
                summaries.append({**summary, "top": top_functions(out, limit=top)})
        return summaries


def top_functions(path: Path, limit: int = 15) -> list[tuple[str, float]]:
    """From py-spy's raw (collapsed stacks) output: the share of samples in which each function is
    on the stack ("inclusive"), for the functions of our code and the libraries we call."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0]
            where = frame[frame.find("(") + 1 : frame.find(":")] if "(" in frame else ""
            key = f"{name} ({where.rsplit('site-packages/', 1)[-1]})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    if not total:
        return []
    return [(key, round(100 * count / total, 1)) for key, count in inclusive.most_common(limit)]


# Where a step's time goes, by the functions that matter in our hot path.
HOT_PATH = {
    "consumer connect": "AssistantConsumer.connect",
    "consumer receive": "AssistantConsumer.receive",
    "render group events": "AssistantConsumer.conversation_events",
    "conversation_open": "conversation_open",
    "assistant_queue_input": "assistant_queue_input",
    "assistant_advance": "assistant_advance",
    "celery task.delay (kombu publish)": "Task.delay",
    "publish to group": "conversations/publish.py",
    "channel layer group_send": "group_send",
    "channel layer receive": "RedisChannelLayer.receive",
    "DB connect/close": "get_new_connection",
    "close_old_connections": "close_old_connections",
    "transaction commit": "BaseDatabaseWrapper._commit (",
    "on_commit hooks": "run_and_clear_commit_hooks",
    "SQL compile": "SQLCompiler.as_sql",
    "sqlite execute": "SQLiteCursorWrapper.execute",
    "celery worker dispatch (main)": "Consumer.on_task_received",
    "billiard pipes": "billiard/connection.py",
    "logging": "logging/__init__.py",
    "websocket frames (autobahn)": "autobahn",
    "json": "json/",
}


def hot_path(path: Path) -> dict[str, float]:
    """Share of the samples (of the process's busy time) under each HOT_PATH marker."""
    hits: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for label, marker in HOT_PATH.items():
            if marker in stack:
                hits[label] += count
    return {label: round(100 * hits[label] / total, 1) for label in HOT_PATH if hits[label]} if total else {}

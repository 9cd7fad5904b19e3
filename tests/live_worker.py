"""Real Celery workers in subprocesses, and sending a task to a queue of a test's own.

The session's in-process worker (`celery_session_worker`) consumes the default queue; a test that
must control who runs `generate_answer` (or that nobody does) routes it to a private queue.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import psutil
from celery.app.routes import MapRoute

from botsite.celery import app as celery_app
from tests.live import ROOT, test_database_url


@contextlib.contextmanager
def task_routed_to_private_queue(task_name: str) -> Iterator[str]:
    """Send `task_name` to a fresh queue for the duration; purge it afterwards."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    router = celery_app.amqp.router
    route = MapRoute({task_name: {"queue": queue}})
    original = router.routes
    router.routes = [route, *original]
    try:
        yield queue
    finally:
        router.routes = original
        with celery_app.connection_for_write() as connection, contextlib.suppress(Exception):
            connection.default_channel.queue_purge(queue)


class CeleryWorkerProcess:
    """`celery worker` with a prefork pool of one child (or, with `pool="threads"`, four threads
    in the main process, as runstack's answers workers), consuming `queue` only (comma-separated:
    several)."""

    def __init__(self, queue: str, extra_env: dict[str, str] | None = None, pool: str = "prefork") -> None:
        self.queue = queue
        self.pool = pool
        self.env = {**os.environ, "DATABASE_URL": test_database_url(), **(extra_env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> CeleryWorkerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "botsite", "worker", "-Q", self.queue, "-P", self.pool,
             "-c", "1" if self.pool == "prefork" else "4", "--without-mingle", "--without-gossip",
             "--without-heartbeat",
             "-l", "INFO",
             "-n", f"{self.queue.replace(',', '-')}@%h"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def pool_children(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        children = self.pool_children()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def __enter__(self) -> CeleryWorkerProcess:
        return self.start()

    def output(self) -> str:
        with open(self.log.name, errors="replace") as log:
            return log.read()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)

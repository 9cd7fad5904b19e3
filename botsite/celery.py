"""The Celery app. Workers run flow steps and answer generation; beat runs the sweeper."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

from botsite import heap, kombu_clients

kombu_clients.install()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")


class _CelerySettings(Mapping[str, Any]):
    """The project's CELERY_* settings, read from Django's once, on Celery's first look.

    Celery looks its configuration up on every task it sends (28 lookups, each trying a key
    with and without the prefix); through Django's lazy settings a missing key is an exception
    every time: a fifth of an enqueue, measured. A dict answers at once. Read lazily because
    this module is imported while the settings module may itself still be importing."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _settings(self) -> dict[str, Any]:
        if self._values is None:
            from django.conf import settings

            self._values = {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._settings()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._settings()

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings())

    def __len__(self) -> int:
        return len(self._settings())


app = Celery("botsite")
app.config_from_object(_CelerySettings(), namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_startup_objects(**kwargs: object) -> None:
    # Everything a pool process inherits at fork (Django, the apps, Celery) lives as long as the
    # process: out of the collector's sight, full collections stay cheap and do not write to
    # (and so copy) the pages shared with the parent.
    gc.freeze()


@worker_ready.connect
def _freeze_main_process_startup_objects(sender: object = None, **kwargs: object) -> None:
    # The worker's main process as well: with a thread pool it runs the tasks itself, and its
    # full collections walked the whole startup heap, 70-100 ms during which every answer it
    # streamed stood still (docs/performance.md). With prefork it only consumes and dispatches.
    heap.freeze()
    from celery.concurrency.thread import TaskPool as ThreadPool
    from django.conf import settings

    # Only a thread pool streams in this process: a prefork main process dispatches (its
    # children start their own streaming process on their first answer) and must not step back.
    if settings.GENERATION_STREAM_PROCESS and isinstance(getattr(sender, "pool", None), ThreadPool):
        # Started now rather than by the first answer, which would wait for its interpreter.
        from conversations.generation import streamer

        streamer.streamer()
        _lower_priority(settings.GENERATION_WORKER_NICE)


def _lower_priority(niceness: int) -> None:
    """Every thread of this process (Linux sets niceness per thread; threads started later
    inherit it from the thread that starts them) `niceness` steps below where it is."""
    if niceness <= 0 or not os.path.isdir("/proc/self/task"):
        return
    for thread_id in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            tid = int(thread_id)
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)


@task_prerun.connect
def _close_failed_or_old_connections(**kwargs: object) -> None:
    # What Django does around a request: with CELERY_DB_REUSE_MAX set, Celery keeps connections
    # open, and a connection that broke (a database restart) or outlived CONN_MAX_AGE must not
    # serve the next task.
    from django.db import close_old_connections

    close_old_connections()


@task_postrun.connect
def _keep_connections_only_in_pool_processes(**kwargs: object) -> None:
    # A prefork child (or the solo pool) runs its tasks on its main thread: its one connection
    # per database is worth keeping. A thread pool's threads would each keep theirs, idle, a
    # hundred of them with the benchmark's pool: those close after each task, as before.
    from django.db import close_old_connections, connections

    if threading.current_thread() is threading.main_thread():
        close_old_connections()
    else:
        connections.close_all()

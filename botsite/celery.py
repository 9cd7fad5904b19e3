"""The Celery app. Workers run flow steps and answer generation; beat runs the sweeper."""

from __future__ import annotations

import gc
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init

from botsite import kombu_clients

kombu_clients.install()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")

app = Celery("botsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_startup_objects(**kwargs: object) -> None:
    # Everything a pool process inherits at fork (Django, the apps, Celery) lives as long as the
    # process: out of the collector's sight, full collections stay cheap and do not write to
    # (and so copy) the pages shared with the parent.
    gc.freeze()


@task_prerun.connect
@task_postrun.connect
def _close_failed_or_old_connections(**kwargs: object) -> None:
    # What Django does around a request: with CELERY_DB_REUSE_MAX set, Celery keeps connections
    # open, and a connection that broke (a database restart) or outlived CONN_MAX_AGE must not
    # serve the next task.
    from django.db import close_old_connections

    close_old_connections()

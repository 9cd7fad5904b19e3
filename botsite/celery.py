"""The Celery app. Workers run flow steps and answer generation; beat runs the sweeper."""

from __future__ import annotations

import gc
import os

from celery import Celery
from celery.signals import worker_process_init

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

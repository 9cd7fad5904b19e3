"""The Celery app. Workers run flow steps and answer generation; beat runs the sweeper."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")

app = Celery("botsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

"""Sending Celery tasks from web processes and workers: by name, never failing the caller.

A broker that is down must not undo what was stored: the stored inputs and turns are the truth,
and the sweeper (`sweeper.requeue_stranded`) enqueues again whatever a lost send left waiting.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue(task_name: str, *args: Any) -> None:
    """Send the task `conversations.tasks.<task_name>` now."""
    from conversations import tasks  # the tasks import the inbox, which imports this module

    try:
        getattr(tasks, task_name).delay(*args)
    except Exception:
        logger.warning("could not enqueue %s%r; the sweeper will retry", task_name, args, exc_info=True)


def enqueue_on_commit(task_name: str, *args: Any) -> None:
    """Send it once the current transaction commits (never for one that rolls back)."""
    transaction.on_commit(lambda: enqueue(task_name, *args))

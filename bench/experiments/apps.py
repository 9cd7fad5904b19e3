from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class InlineFlowConfig(AppConfig):
    """Proposal: advance an assistant flow in the process that stored the input, right after the
    commit, instead of through a Celery task (the flow engine is pure and fast; the Celery hop
    costs a kombu publish in daphne and a whole task dispatch in the worker)."""

    name = "bench.experiments"
    label = "bench_experiments"

    def ready(self) -> None:
        from django.db import transaction

        from conversations import services

        original = services._enqueue_on_commit

        def enqueue_on_commit(task_name: str, *args: Any) -> None:
            if task_name == "advance_flow":
                transaction.on_commit(lambda: services.assistant_advance(*args))
                return
            original(task_name, *args)

        services._enqueue_on_commit = enqueue_on_commit  # type: ignore[assignment]

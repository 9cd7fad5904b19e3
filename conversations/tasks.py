"""Celery tasks: ids in, re-fetch, safe to run twice (they work only on what is still pending)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from conversations import inbox, sweeper

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, max_retries=5, autoretry_for=(OSError,), retry_backoff=True)
def advance_flows(conversation_ids: list[str]) -> None:
    """Run assistant conversations' flows up to the next point where each waits (one batch)."""
    inbox.advance(conversation_ids)


@shared_task(acks_late=True, max_retries=5, autoretry_for=(OSError,), retry_backoff=True)
def advance_flow(conversation_id: str) -> None:
    """One conversation; kept for tasks already queued by an earlier release."""
    inbox.advance([conversation_id])


@shared_task(acks_late=True, max_retries=3, autoretry_for=(OSError,), retry_backoff=True)
def generate_answer(conversation_id: str, user_seq: int) -> None:
    """Generate, stream and store the answer to the visitor's message `user_seq`."""
    from conversations.generation.pipeline import run_generation

    run_generation(conversation_id, user_seq)


@shared_task(acks_late=True)
def sweep_turns() -> int:
    """Beat: enqueue again work whose task was lost; end turns stuck in user_writing/ai_generating;
    time out idle conversations."""
    return sweeper.requeue_stranded() + sweeper.sweep(settings.TURN_STUCK_SECONDS, settings.TURN_IDLE_TIMEOUT_SECONDS)

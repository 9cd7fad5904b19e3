"""Beat task: the periodic summary interjection ("You've used emojis in 3 messages!")."""

from __future__ import annotations

import logging

from celery import shared_task

from conversations.agents import emit, services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def send_agent_summaries() -> int:
    """Summarise every open engagement whose count of true results changed; the number sent.

    Each engagement is claimed in its own locked transaction and emitted after the commit, so
    two runs at once (or a redelivery) send each new count once."""
    sent = 0
    for conversation_id in services.summaries_due():
        outcome = services.engagement_summarise(conversation_id)
        if outcome is None:
            continue
        room, interjection = outcome
        try:
            emit.emit_to_room(room, "interjection", interjection)
        except Exception:  # stored either way; the next count change sends a fresh summary
            logger.exception("agents: could not emit the summary of %s", conversation_id)
            continue
        sent += 1
    return sent

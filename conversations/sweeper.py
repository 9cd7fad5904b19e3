"""Finds conversations a crash left mid-turn, and idle ones past their timeout."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from conversations import services, task_queue, turns
from conversations.events import turn_event
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.publish import publish_on_commit
from conversations.services import lock_conversation

STUCK_MESSAGE = "Sorry, something went wrong while answering. Please send your message again."
# Work older than this that nobody picked up is assumed lost with its task (a broker outage
# between commit and enqueue) and enqueued again; the tasks are safe to run twice.
REQUEUE_AFTER_SECONDS = 5


def requeue_stranded(older_than_seconds: int = REQUEUE_AFTER_SECONDS) -> int:
    """Enqueue again the work whose task was lost: assistant inputs waiting in the inbox,
    assistant conversations whose flow never started, committed messages never answered."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    waiting = set(
        Message.objects.filter(
            seq__isnull=True, created_at__lt=cutoff, conversation__ended_at__isnull=True
        ).values_list("conversation_id", flat=True)[:500]
    )
    waiting |= set(
        Conversation.objects.filter(
            channel=Channel.ASSISTANT, flow_position__isnull=True, flow_version__isnull=False,
            created_at__lt=cutoff, ended_at__isnull=True,
        ).values_list("pk", flat=True)[:500]
    )  # fmt: skip
    if waiting:
        task_queue.enqueue("advance_flows", sorted(str(conversation_id) for conversation_id in waiting))
    unanswered = Conversation.objects.filter(
        turn_state=TurnState.USER_COMMITTED, turn_changed_at__lt=cutoff, ended_at__isnull=True
    ).values_list("pk", flat=True)[:500]
    requeued = len(waiting)
    for conversation_id in unanswered:
        user_seq = (
            Message.objects.filter(conversation_id=conversation_id, direction=Message.Direction.IN, seq__isnull=False)
            .order_by("-seq")
            .values_list("seq", flat=True)
            .first()
        )
        if user_seq is not None:
            task_queue.enqueue("generate_answer", str(conversation_id), user_seq)
            requeued += 1
    return requeued


def sweep(stuck_seconds: int, idle_timeout_seconds: int) -> int:
    """Move stuck turns to `error` and long-idle conversations to `timeout`. Returns how many."""
    now = timezone.now()
    moved = 0
    stuck_ids = list(
        Conversation.objects.filter(
            turn_state__in=[TurnState.USER_WRITING, TurnState.USER_COMMITTED, TurnState.AI_GENERATING],
            turn_changed_at__lt=now - timedelta(seconds=stuck_seconds),
            ended_at__isnull=True,
        ).values_list("pk", flat=True)[:500]
    )
    cutoff = now - timedelta(seconds=stuck_seconds)
    for conversation_id in stuck_ids:
        state = Conversation.objects.filter(pk=conversation_id).values_list("turn_state", flat=True).first()
        if services.conversation_fail(
            conversation_id, f"stuck in {state}", visitor_message=STUCK_MESSAGE, code="timeout", stuck_before=cutoff
        ):
            moved += 1
    if idle_timeout_seconds > 0:
        idle_ids = list(
            Conversation.objects.filter(
                turn_state=TurnState.IDLE,
                turn_changed_at__lt=now - timedelta(seconds=idle_timeout_seconds),
                ended_at__isnull=True,
            ).values_list("pk", flat=True)[:500]
        )
        for conversation_id in idle_ids:
            with transaction.atomic():
                conversation = lock_conversation(conversation_id)
                if conversation.turn_state != TurnState.IDLE:
                    continue
                turns.move(conversation, TurnState.TIMEOUT, "idle too long")
                publish_on_commit(conversation.pk, [turn_event(TurnState.TIMEOUT, "idle too long")])
                moved += 1
    return moved

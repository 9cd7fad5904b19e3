"""The beat sweeper ends turns a crash left hanging and times out idle conversations, telling
connected clients."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from conversations import services, sweeper, tasks
from conversations.models import Channel, Conversation, Message, TurnState
from conversations.publish import group_name
from tests.live_worker import task_routed_to_private_queue

pytestmark = pytest.mark.django_db(transaction=True)


def _conversation(brand, state: str, seconds_ago: int) -> Conversation:
    conversation = services.conversation_open(brand, Channel.SESSIONS, user_id="alice")
    Conversation.objects.filter(pk=conversation.pk).update(
        turn_state=state, turn_changed_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return Conversation.objects.get(pk=conversation.pk)


@pytest.mark.parametrize("state", [TurnState.USER_WRITING, TurnState.USER_COMMITTED, TurnState.AI_GENERATING])
def test_a_turn_stuck_too_long_moves_to_error_with_a_visible_message(techpro, state):
    stuck = _conversation(techpro, state, seconds_ago=300)
    recent = _conversation(techpro, state, seconds_ago=5)
    assert sweeper.sweep(stuck_seconds=120, idle_timeout_seconds=0) == 1
    stuck.refresh_from_db()
    recent.refresh_from_db()
    assert stuck.turn_state == TurnState.ERROR and stuck.last_error == sweeper.STUCK_MESSAGE
    assert stuck.transitions.get().reason == f"stuck in {state}"
    assert recent.turn_state == state


def test_finished_turns_are_left_alone(techpro):
    for state in (TurnState.IDLE, TurnState.AI_COMMITTED, TurnState.ERROR, TurnState.TIMEOUT):
        _conversation(techpro, state, seconds_ago=10_000)
    assert sweeper.sweep(stuck_seconds=120, idle_timeout_seconds=0) == 0


def test_idle_conversations_time_out_only_when_configured(techpro):
    idle = _conversation(techpro, TurnState.IDLE, seconds_ago=4000)
    assert sweeper.sweep(stuck_seconds=120, idle_timeout_seconds=0) == 0
    assert sweeper.sweep(stuck_seconds=120, idle_timeout_seconds=3600) == 1
    idle.refresh_from_db()
    assert idle.turn_state == TurnState.TIMEOUT
    # A timed-out session takes the next message (timeout → idle → user_writing …).
    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        services.conversation_accept_user_message(idle.pk, "back again")
    assert Conversation.objects.get(pk=idle.pk).turn_state == TurnState.USER_COMMITTED


async def test_connected_clients_are_told_when_a_stuck_turn_is_ended(techpro):
    stuck = await asyncio.to_thread(_conversation, techpro, TurnState.AI_GENERATING, 300)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(stuck.pk), channel)
    try:
        await asyncio.to_thread(sweeper.sweep, 120, 0)
        async with asyncio.timeout(10):
            events = (await layer.receive(channel))["events"]
    finally:
        await layer.group_discard(group_name(stuck.pk), channel)
    assert events[0] == {"type": "error", "code": "timeout", "message": sweeper.STUCK_MESSAGE, "reply_to": None}
    assert events[1]["type"] == "turn" and events[1]["state"] == TurnState.ERROR


def test_the_beat_task_runs_in_a_worker_with_the_configured_limit(techpro, settings, worker):
    settings.TURN_STUCK_SECONDS = 60
    stuck = _conversation(techpro, TurnState.AI_GENERATING, seconds_ago=90)
    fresh = _conversation(techpro, TurnState.AI_GENERATING, seconds_ago=30)
    tasks.sweep_turns.delay()
    deadline = time.monotonic() + 20
    while Conversation.objects.get(pk=stuck.pk).turn_state != TurnState.ERROR:
        assert time.monotonic() < deadline, "the sweep did not run"
        time.sleep(0.05)
    assert Conversation.objects.get(pk=fresh.pk).turn_state == TurnState.AI_GENERATING


@pytest.mark.django_db(transaction=True)
def test_work_whose_task_was_lost_is_enqueued_again_and_done(techpro, worker):
    """A broker outage between the commit and the enqueue strands work; the sweeper finds it."""
    # Stored without a task, as when the broker refused the enqueue.
    conversation = Conversation.objects.create(
        brand=techpro, channel=Channel.ASSISTANT, visitor_key="lost",
        flow_version_id=techpro.flows.get(is_active=True).published_version_id,
    )  # fmt: skip
    Message.objects.filter(conversation=conversation).delete()
    Conversation.objects.filter(pk=conversation.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    assert sweeper.requeue_stranded() == 1
    for _ in range(100):
        if Message.objects.filter(conversation=conversation, seq__isnull=False).count() == 2:
            break
        time.sleep(0.05)
    assert [m.kind for m in Message.objects.filter(conversation=conversation).order_by("seq")] == [
        "BotText", "ChoiceRequest"]  # fmt: skip

    # An answer left in the inbox, and its retry with the same clientId.
    answer = {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go"}
    Message.objects.create(conversation=conversation, direction="in", kind="ChoiceResponse", payload=answer,
                           client_id="c-9")  # fmt: skip
    assert services.assistant_queue_input(conversation.pk, dict(answer), client_id="c-9") is (
        services.InputResult.DUPLICATE
    )
    for _ in range(100):
        if not Message.objects.filter(conversation=conversation, seq__isnull=True).exists():
            break
        time.sleep(0.05)
    assert [m.seq for m in Message.objects.filter(conversation=conversation).order_by("seq")] == [1, 2, 3, 4]
    assert sweeper.requeue_stranded() == 0

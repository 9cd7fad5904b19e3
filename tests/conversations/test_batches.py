"""The batched paths: many inputs stored at once, many conversations advanced and published at
once. Each must give every conversation exactly what the one-at-a-time path gives it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from conversations import inbox, services
from conversations.events import turn_event
from conversations.models import Conversation, Message, TurnState, TurnTransition
from conversations.protocols.batching import Coalescer
from conversations.publish import group_name, publish_many
from flows.models import Brand, Flow
from tests.live_worker import task_routed_to_private_queue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_worker_interferes():
    """These tests advance conversations themselves: the tasks they enqueue go to a queue that
    no worker (e.g. the session's) consumes."""
    with task_routed_to_private_queue("conversations.tasks.advance_flows"):
        yield


LANG_GO = {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go"}
OTHERS_YES = {"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes"}


def _open(brand, n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    services.assistant_conversations_open([(brand, f"visitor-{i}", ids[i]) for i in range(n)])
    return ids


def _log(conversation_id) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, seq__isnull=False)
        .order_by("seq")
        .values_list("seq", "direction", "kind")
    )


def test_a_batch_of_handshakes_runs_each_brands_published_flow(techpro):
    flowless = Brand.objects.create(slug="flowless", name="No flow yet")
    retired = Brand.objects.create(slug="retired", name="Old flow")
    old = techpro.flows.get()
    Flow.objects.create(brand=retired, name="old", is_active=False, published_version=old.published_version)
    ids = [uuid.uuid4() for _ in range(4)]
    brands = [techpro, flowless, retired, techpro]
    services.assistant_conversations_open([(b, f"v-{i}", ids[i]) for i, b in enumerate(brands)])
    opened = Conversation.objects.in_bulk(ids)
    assert [opened[i].brand_id for i in ids] == [b.pk for b in brands]
    assert [opened[i].flow_version_id for i in ids] == [old.published_version_id, None, None, old.published_version_id]
    assert all(opened[i].channel == "assistant" and opened[i].turn_state == TurnState.IDLE for i in ids)


def test_a_batch_of_conversations_ends_as_if_each_ran_alone(techpro):
    batched = _open(techpro, 5)
    alone = _open(techpro, 1)[0]
    inbox.advance(batched)
    services.assistant_advance(alone)
    items = [inbox.PendingInput(c, dict(LANG_GO), f"a-{c}", "") for c in batched]
    items += [inbox.PendingInput(c, dict(OTHERS_YES), f"b-{c}", "") for c in batched]
    assert inbox.queue_inputs(items) == [inbox.InputResult.QUEUED] * 10
    inbox.advance(batched)
    services.assistant_queue_input(alone, dict(LANG_GO))
    services.assistant_queue_input(alone, dict(OTHERS_YES))
    services.assistant_advance(alone)

    expected = _log(alone)
    assert len(expected) > 4
    reference = Conversation.objects.get(pk=alone)
    for conversation_id in batched:
        assert _log(conversation_id) == expected
        conversation = Conversation.objects.get(pk=conversation_id)
        assert conversation.flow_position == reference.flow_position
        assert conversation.last_seq == reference.last_seq == expected[-1][0]
        assert conversation.turn_state == TurnState.IDLE
        assert not Message.objects.filter(conversation_id=conversation_id, seq__isnull=True).exists()
        transitions = [t.path() for t in TurnTransition.objects.filter(conversation_id=conversation_id)]
        # One audit row per step, naming the five moves it made.
        step = ["idle", "user_writing", "user_committed", "ai_generating", "ai_committed", "idle"]
        assert transitions == [t.path() for t in TurnTransition.objects.filter(conversation_id=alone)] == [step, step]
    # A batch happens at one time: its messages, audit rows and turn changes carry the same one.
    batch_time = Message.objects.filter(conversation_id=batched[0], seq=expected[-1][0]).get().created_at
    assert {
        *Message.objects.filter(conversation_id__in=batched, seq__gt=2).values_list("created_at", flat=True),
        *TurnTransition.objects.filter(conversation_id__in=batched).values_list("created_at", flat=True),
        *Conversation.objects.filter(pk__in=batched).values_list("turn_changed_at", flat=True),
    } == {batch_time}


def test_a_batch_larger_than_one_statement_is_stored_and_applied_whole(techpro):
    """Rows go to the database many to a statement, as many statements as the backend's
    parameter limit needs; a batch asked for one conversation applies every waiting one."""
    ids = _open(techpro, 300)
    inbox.advance(ids)  # 600 bot messages: several INSERTs
    assert (
        inbox.queue_inputs([inbox.PendingInput(c, dict(LANG_GO), f"go-{c}", "") for c in ids])
        == [inbox.InputResult.QUEUED] * 300
    )
    waiting = inbox.WAITING_ELSEWHERE.rows()
    assert len(waiting) == 300 and {type(conversation_id) for (conversation_id,) in waiting} == {uuid.UUID}
    inbox.advance(ids[:1])
    assert not Message.objects.filter(seq__isnull=True).exists()  # 300 inbox rows deleted
    expected = _log(ids[0])
    assert [kind for _, _, kind in expected] == ["BotText", "ChoiceRequest", "ChoiceResponse", "ChoiceRequest"]
    for conversation_id in ids[1:]:
        assert _log(conversation_id) == expected
    assert Message.objects.filter(conversation_id__in=ids).count() == 4 * 300


def test_duplicates_and_floods_are_decided_per_input_within_one_batch(techpro, settings):
    settings.MAX_PENDING_INPUTS = 2
    first, second = _open(techpro, 2)
    items = [
        inbox.PendingInput(first, dict(LANG_GO), "same", ""),
        inbox.PendingInput(first, dict(LANG_GO), "same", ""),  # a retry inside the batch
        inbox.PendingInput(second, dict(LANG_GO), "same", ""),  # client ids are per conversation
        inbox.PendingInput(second, dict(OTHERS_YES), None, ""),
        inbox.PendingInput(second, dict(OTHERS_YES), None, ""),  # a third one waiting: busy
    ]
    results = inbox.queue_inputs(items)
    Q, D, B = inbox.InputResult.QUEUED, inbox.InputResult.DUPLICATE, inbox.InputResult.BUSY
    assert results == [Q, D, Q, Q, B]
    assert Message.objects.filter(seq__isnull=True).count() == 3
    # The same client id again, in a later batch, while the first still waits.
    assert inbox.queue_inputs([inbox.PendingInput(first, dict(LANG_GO), "same", "")]) == [D]


def test_an_ended_conversation_in_a_batch_is_left_alone(techpro):
    running, ended = _open(techpro, 2)
    Conversation.objects.filter(pk=ended).update(ended_at="2026-01-01T00:00:00Z")
    inbox.advance([running, ended, uuid.uuid4()])  # an unknown id too
    assert _log(running)
    assert _log(ended) == []


async def test_publish_many_reaches_every_member_of_every_group_once():
    layer = get_channel_layer()
    conversations = [uuid.uuid4() for _ in range(3)]
    a, b, both = await layer.new_channel(), await layer.new_channel(), await layer.new_channel()
    memberships = [(conversations[0], a), (conversations[1], b), (conversations[0], both), (conversations[1], both)]
    for conversation_id, channel in memberships:
        await layer.group_add(group_name(conversation_id), channel)
    batches = [
        (conversation_id, [turn_event(TurnState.IDLE, str(conversation_id))]) for conversation_id in conversations
    ]
    try:
        await asyncio.to_thread(publish_many, batches)
        async with asyncio.timeout(10):
            got_a = [m["events"][0]["reason"] for m in [await layer.receive(a)]]
            got_b = [m["events"][0]["reason"] for m in [await layer.receive(b)]]
            got_both = sorted([(await layer.receive(both))["events"][0]["reason"] for _ in range(2)])
    finally:
        for conversation_id, channel in memberships:
            await layer.group_discard(group_name(conversation_id), channel)
    assert got_a == [str(conversations[0])]
    assert got_b == [str(conversations[1])]
    assert got_both == sorted([str(conversations[0]), str(conversations[1])])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await layer.receive(a)  # nothing more: conversation 2's group had no members


async def test_a_coalescer_hands_what_queued_meanwhile_to_one_batch():
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await release.wait()
        return [item * 2 for item in items]

    coalescer: Coalescer[int, int] = Coalescer(double)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 2
    assert [await task for task in later] == [4, 6, 8]
    assert calls == [[1], [2, 3, 4]]


async def test_a_failed_batch_fails_its_submitters_and_the_next_batch_still_runs():
    async def fragile(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("zero")
        return items

    coalescer: Coalescer[int, int] = Coalescer(fragile)
    with pytest.raises(ValueError):
        await coalescer.submit(0)
    assert await coalescer.submit(5) == 5


def test_storing_and_advancing_a_batch_never_scans_the_whole_message_log(techpro):
    """The message log only grows: every read of a batch must go through an index to the rows
    it wants. (Unordered, the look for other conversations' waiting inputs once scanned the
    index of every stored message, and the soak's throughput fell as the log grew.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plans")
    ids = _open(techpro, 3)
    inbox.advance(ids)
    with CaptureQueriesContext(connection) as captured:
        inbox.queue_inputs([inbox.PendingInput(i, dict(LANG_GO), f"c-{i}") for i in ids])
        inbox.advance(ids[:1])
    reads = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert any("conversations_message" in sql for sql in reads)
    with connection.cursor() as cursor:
        for sql in reads:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            for step in (row[-1] for row in cursor.fetchall()):
                assert not (step.startswith("SCAN conversations_message") and "message_inbox_idx" not in step), (
                    f"{step} in {sql}"
                )


def test_a_batch_of_visitor_messages_is_decided_per_message_as_if_each_came_alone(techpro):
    other_brand = Brand.objects.create(slug="other", name="Other")
    idle = services.conversation_open(techpro, "brand_chat")
    failed = services.conversation_open(techpro, "brand_chat")
    Conversation.objects.filter(pk=failed.pk).update(turn_state=TurnState.ERROR)
    answering = services.conversation_open(techpro, "brand_chat")
    Conversation.objects.filter(pk=answering.pk).update(turn_state=TurnState.AI_GENERATING)
    ended = services.conversation_open(techpro, "brand_chat")
    Conversation.objects.filter(pk=ended.pk).update(ended_at="2026-01-01T00:00:00Z")
    theirs = services.conversation_open(other_brand, "brand_chat")
    sessions = services.conversation_open(techpro, "sessions")
    new = uuid.uuid4()

    def message(conversation_id, text, opens=False):
        return services.VisitorMessage(
            conversation_id, text, kind="chat", opens=opens, brand_id=techpro.pk, channel="brand_chat", user_id="u1"
        )

    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        results = services.accept_visitor_messages(
            [
                message(new, "first of a new one", opens=True),
                message(idle.pk, "hello"),
                message(idle.pk, "hello again"),  # its turn was taken by the message above
                message(failed.pk, "retry after an error"),
                message(answering.pk, "while answering"),
                message(ended.pk, "too late"),
                message(theirs.pk, "another brand's"),
                message(sessions.pk, "another channel's"),
                message(uuid.uuid4(), "forged"),
                message(idle.pk, "opening an existing id", opens=True),
            ]
        )
    kinds = [type(result).__name__ for result in results]
    assert kinds == ["Message", "Message", "Busy", "Message", "Busy"] + ["UnknownConversation"] * 5
    opened = Conversation.objects.get(pk=new)
    assert (opened.brand_id, opened.channel, opened.user_id, opened.last_seq) == (techpro.pk, "brand_chat", "u1", 1)
    for conversation_id in (new, idle.pk, failed.pk):
        conversation = Conversation.objects.get(pk=conversation_id)
        assert conversation.turn_state == TurnState.USER_COMMITTED
        assert _log(conversation_id) == [(1, "in", "chat")]
        transition = TurnTransition.objects.filter(conversation_id=conversation_id).latest("id")
        assert (transition.to_state, transition.reason) == (TurnState.USER_COMMITTED, "visitor message")
    assert Message.objects.get(conversation_id=idle.pk).payload == {"kind": "chat", "content": "hello"}
    assert TurnTransition.objects.get(conversation_id=failed.pk).from_state == TurnState.ERROR
    for untouched in (answering, ended, theirs, sessions):
        assert _log(untouched.pk) == []
        assert Conversation.objects.get(pk=untouched.pk).last_seq == 0
    assert Conversation.objects.get(pk=answering.pk).turn_state == TurnState.AI_GENERATING
    assert [result.seq for result in results if isinstance(result, Message)] == [1, 1, 1]

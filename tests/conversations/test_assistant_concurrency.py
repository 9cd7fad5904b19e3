"""Many answers at once, several workers: each applied once, in order. Runs on SQLite in
`make test` and on PostgreSQL (row locks) in `make test-postgres`."""

import threading

import pytest

from conversations import services
from conversations.models import Channel, Conversation, Message, TurnTransition
from tests.protocols.assistant_client import AssistantClient

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

ROUND = [
    {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go"},
    {"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes"},
]


def test_racing_workers_apply_queued_answers_once_each_in_order(techpro):
    conversation = services.conversation_open(techpro, Channel.ASSISTANT, visitor_key="v")
    services.assistant_advance(conversation.pk)  # the greeting and the first choice
    for answer in ROUND * 4:
        assert services.assistant_queue_input(conversation.pk, dict(answer)) is services.InputResult.QUEUED
    errors: list[BaseException] = []

    def advance() -> None:
        try:
            services.assistant_advance(conversation.pk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=advance) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    log = list(Message.objects.filter(conversation=conversation).order_by("seq"))
    assert all(m.seq is not None for m in log)
    assert [m.seq for m in log] == list(range(1, len(log) + 1))
    inputs = [(m.payload["groupId"], m.payload["itemId"]) for m in log if m.direction == "in"]
    assert inputs == [("lang", "go"), ("others", "yes")] * 4
    questions = [m.payload["groupId"] for m in log if m.kind == "ChoiceRequest"]
    assert questions == ["lang"] + ["others", "lang"] * 4
    conversation.refresh_from_db()
    assert conversation.turn_state == "idle"
    # Every turn went idle → user_writing → user_committed → ai_generating → ai_committed → idle.
    moves = [move for row in TurnTransition.objects.filter(conversation=conversation) for move in row.moves()]
    assert moves.count(("ai_generating", "ai_committed")) == 8


async def test_a_burst_from_one_socket_is_applied_in_order_by_several_workers(techpro, worker):
    client = AssistantClient()
    await client.connect()
    await client.receive_until("ChoiceRequest")
    for answer in ROUND * 3:
        await client.send(answer)
    received = [await client.receive() for _ in range(6)]
    assert [m["groupId"] for m in received] == ["others", "lang"] * 3
    assert [m["seq"] for m in received] == [4, 6, 8, 10, 12, 14]
    await client.close()


def test_queueing_the_same_client_id_from_two_threads_stores_it_once(techpro):
    conversation = services.conversation_open(techpro, Channel.ASSISTANT, visitor_key="v")
    results: list[services.InputResult] = []

    def queue() -> None:
        results.append(services.assistant_queue_input(conversation.pk, dict(ROUND[0]), client_id="same"))
        from django.db import connection

        connection.close()

    threads = [threading.Thread(target=queue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.value for r in results) == ["duplicate"] * 3 + ["queued"]
    assert Conversation.objects.get(pk=conversation.pk).messages.filter(client_id="same").count() == 1

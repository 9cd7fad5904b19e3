"""Web processes storing overlapping batches of visitor messages at once: each conversation's turn
is taken by exactly one message, the others are told it is busy, and no batch deadlocks another.
Runs on SQLite in `make test` and on PostgreSQL (row locks) in `make test-postgres`."""

import itertools
import threading
import uuid

import pytest
from django.db import connection

from conversations import services
from conversations.models import Conversation, Message, TurnState, TurnTransition
from tests.live_worker import task_routed_to_private_queue

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


def _race(batches: list[list[services.VisitorMessage]]) -> list[list[object]]:
    """Store each batch from a thread of its own (its own database connection), all at once."""
    barrier = threading.Barrier(len(batches))
    results: list[list[object]] = [[] for _ in batches]

    def store(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = list(services.accept_visitor_messages(batches[index]))
        except Exception as exc:  # reported by the caller, with the batch it came from
            results[index] = [exc]
        finally:
            connection.close()

    threads = [threading.Thread(target=store, args=(index,)) for index in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_overlapping_batches_from_racing_web_processes_take_each_turn_once(techpro):
    conversations = [services.conversation_open(techpro, "brand_chat").pk for _ in range(4)]
    # Each process's batch names the same conversations in another order, and opens one of its own.
    orders = list(itertools.permutations(conversations))[::5][:6]
    for round_number in range(3):
        batches = [
            [services.VisitorMessage(pk, f"round {round_number}", brand_id=techpro.pk, channel="brand_chat")
             for pk in order]
            + [services.VisitorMessage(uuid.uuid4(), "new", opens=True, brand_id=techpro.pk, channel="brand_chat")]
            for order in orders
        ]  # fmt: skip
        with task_routed_to_private_queue("conversations.tasks.generate_answer"):
            results = _race(batches)
        assert all(len(result) == len(conversations) + 1 for result in results), results
        outcomes: dict[uuid.UUID, list[str]] = {pk: [] for pk in conversations}
        for order, result in zip(orders, results, strict=True):
            for pk, accepted in zip(order, result, strict=False):
                outcomes[pk].append(type(accepted).__name__)
            assert isinstance(result[-1], Message)  # its own new conversation
        for pk, names in outcomes.items():
            assert sorted(names) == ["Busy"] * (len(orders) - 1) + ["Message"], names
            assert Message.objects.filter(conversation_id=pk).count() == round_number + 1
            assert TurnTransition.objects.filter(conversation_id=pk).count() == round_number + 1
        # The answers "arrive": every turn is free again for the next round.
        Conversation.objects.filter(pk__in=conversations).update(turn_state=TurnState.IDLE)

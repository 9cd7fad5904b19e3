"""The turn state machine: the seed's transitions and no others, recorded, and safe under races."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connection, transaction

from conversations import services, turns
from conversations.generation import pipeline
from conversations.models import Channel, Conversation, TurnState, TurnTransition
from tests.live_worker import task_routed_to_private_queue

S = TurnState
SEED_TRANSITIONS = {
    (S.IDLE, S.USER_WRITING),
    (S.IDLE, S.TIMEOUT),
    (S.USER_WRITING, S.USER_COMMITTED),
    (S.USER_WRITING, S.ERROR),
    (S.USER_COMMITTED, S.AI_GENERATING),
    (S.USER_COMMITTED, S.ERROR),
    (S.AI_GENERATING, S.AI_COMMITTED),
    (S.AI_GENERATING, S.ERROR),
    (S.AI_COMMITTED, S.IDLE),
    (S.ERROR, S.IDLE),
    (S.TIMEOUT, S.IDLE),
}
ALL_PAIRS = list(itertools.product(S.values, S.values))


@pytest.mark.parametrize(("before", "after"), ALL_PAIRS)
def test_a_transition_is_allowed_exactly_when_the_seed_draws_it(before, after):
    assert turns.is_allowed(before, after) is ((before, after) in SEED_TRANSITIONS)


def test_the_states_are_the_seeds_seven_in_lower_case():
    assert set(S.values) == {"idle", "user_writing", "user_committed", "ai_generating", "ai_committed", "error",
                             "timeout"}  # fmt: skip


def _conversation_in(brand, state: str) -> Conversation:
    conversation = services.conversation_open(brand, Channel.SESSIONS, user_id="alice")
    Conversation.objects.filter(pk=conversation.pk).update(turn_state=state)
    conversation.refresh_from_db()
    return conversation


@pytest.mark.django_db
@pytest.mark.parametrize(("before", "after"), sorted(SEED_TRANSITIONS))
def test_an_allowed_move_changes_the_row_and_is_recorded(techpro, before, after):
    conversation = _conversation_in(techpro, before)
    turns.move(conversation, after, "because")
    conversation.refresh_from_db()
    assert conversation.turn_state == after
    row = TurnTransition.objects.get(conversation=conversation)
    assert (row.from_state, row.to_state, row.reason) == (before, after, "because") and row.created_at


@pytest.mark.django_db
@pytest.mark.parametrize(("before", "after"), [p for p in ALL_PAIRS if p not in SEED_TRANSITIONS])
def test_a_forbidden_move_is_refused_and_changes_nothing(techpro, before, after):
    conversation = _conversation_in(techpro, before)
    with pytest.raises(turns.TransitionRefused):
        turns.move(conversation, after)
    conversation.refresh_from_db()
    assert conversation.turn_state == before
    assert not TurnTransition.objects.filter(conversation=conversation).exists()


@pytest.mark.django_db
def test_a_move_from_a_stale_read_loses(techpro):
    conversation = _conversation_in(techpro, S.USER_COMMITTED)
    stale = Conversation.objects.get(pk=conversation.pk)
    turns.move(conversation, S.AI_GENERATING)
    with pytest.raises(turns.TransitionRefused, match="lost a race"):
        turns.move(stale, S.AI_GENERATING)
    assert TurnTransition.objects.filter(conversation=conversation).count() == 1


@pytest.mark.django_db
def test_move_through_checks_and_records_every_step(techpro):
    conversation = _conversation_in(techpro, S.IDLE)
    with pytest.raises(turns.TransitionRefused):
        turns.move_through(conversation, [S.USER_WRITING, S.AI_GENERATING])
    assert conversation.turn_state == S.IDLE
    turns.move_through(conversation, [S.USER_WRITING, S.USER_COMMITTED], "message")
    (row,) = TurnTransition.objects.filter(conversation=conversation)
    assert row.moves() == [(S.IDLE, S.USER_WRITING), (S.USER_WRITING, S.USER_COMMITTED)]
    assert (row.from_state, row.via, row.to_state, row.reason) == (S.IDLE, S.USER_WRITING, S.USER_COMMITTED, "message")
    assert str(row) == "idle → user_writing → user_committed"


@pytest.mark.django_db
def test_a_message_is_accepted_only_when_the_turn_allows_it(techpro):
    conversation = services.conversation_open(techpro, Channel.SESSIONS, user_id="alice")
    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        services.conversation_accept_user_message(conversation.pk, "one")
        for state in (S.USER_COMMITTED, S.AI_GENERATING, S.USER_WRITING):
            Conversation.objects.filter(pk=conversation.pk).update(turn_state=state)
            with pytest.raises(services.Busy):
                services.conversation_accept_user_message(conversation.pk, "two")
        for state in (S.AI_COMMITTED, S.ERROR, S.TIMEOUT, S.IDLE):
            Conversation.objects.filter(pk=conversation.pk).update(turn_state=state)
            services.conversation_accept_user_message(conversation.pk, "again")
            assert Conversation.objects.get(pk=conversation.pk).turn_state == S.USER_COMMITTED


def _race(workers: int, attempt) -> list[object]:
    """Run `attempt()` in several threads, each with its own database connection, at once."""
    barrier = threading.Barrier(workers)
    results: list[object] = []

    def run() -> None:
        try:
            barrier.wait(10)
            results.append(attempt())
        except Exception as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_connections_claiming_one_turn_exactly_one_wins(techpro):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: make test-postgres")
    conversation = _conversation_in(techpro, S.USER_COMMITTED)

    def claim() -> str:
        stale = Conversation.objects.get(pk=conversation.pk)  # both read user_committed first
        with transaction.atomic():
            services.lock_conversation(conversation.pk)
            try:
                turns.move(stale, S.AI_GENERATING, "claim")
            except turns.TransitionRefused:
                return "lost"
            return "won"

    for _ in range(5):
        Conversation.objects.filter(pk=conversation.pk).update(turn_state=S.USER_COMMITTED)
        TurnTransition.objects.filter(conversation=conversation).delete()
        results = _race(4, claim)
        assert sorted(map(str, results)) == ["lost", "lost", "lost", "won"]
        assert TurnTransition.objects.filter(conversation=conversation).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_generation_tasks_racing_for_one_message_produce_one_claim(techpro):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: make test-postgres")
    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        conversation = services.conversation_open(techpro, Channel.SESSIONS, user_id="bob")
        seq = services.conversation_accept_user_message(conversation.pk, "hello").seq
        results = _race(3, lambda: pipeline._claim(conversation.pk, seq).outcome)
    assert sorted(map(str, results)).count("claimed") == 1
    moves = TurnTransition.objects.filter(conversation=conversation, to_state=S.AI_GENERATING)
    assert moves.count() == 1

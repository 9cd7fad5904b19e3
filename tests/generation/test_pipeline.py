"""The generation task body against real parts: the loopback model server, Redis, the database."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from channels.layers import get_channel_layer

from conversations import services
from conversations.events import stream_pieces
from conversations.generation import pipeline
from conversations.generation.budget import record_usage, tokens_used_today
from conversations.models import Channel, Conversation, Message
from conversations.publish import group_name
from tests.live_worker import task_routed_to_private_queue
from tests.llm_server import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def nobody_else_generates():
    """These tests run the task body themselves: no worker may pick up the enqueued task."""
    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        yield


def ask(brand, text: str = "I need a laptop") -> tuple[Conversation, int]:
    """A sessions conversation with one visitor message committed (no worker: we run the task)."""
    conversation = services.conversation_open(brand, Channel.SESSIONS, user_id="alice")
    message = services.conversation_accept_user_message(conversation.pk, text)
    return conversation, message.seq


def answers(conversation) -> list[Message]:
    return list(Message.objects.filter(conversation=conversation, direction="out").order_by("seq"))


class Listener:
    """Joins the conversation's group on the real channel layer and collects its events."""

    def __init__(self, conversation_id) -> None:
        self.group = group_name(conversation_id)

    async def __aenter__(self):
        self.layer = get_channel_layer()
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.layer.group_discard(self.group, self.channel)

    async def until(self, predicate, timeout: float = 20) -> list[dict]:
        events: list[dict] = []
        async with asyncio.timeout(timeout):
            while not any(predicate(e) for e in events):
                events += (await self.layer.receive(self.channel))["events"]
        return events


async def run(conversation_id, user_seq) -> None:
    await asyncio.to_thread(pipeline.run_generation, conversation_id, user_seq)


async def test_the_stored_answer_is_exactly_the_streamed_deltas(model_brand, llm_server):
    llm_server.set_tokens(["Try", " the", " \u00e9l\u00e9gant", "\nmodel", " :)"])
    conversation, seq = await asyncio.to_thread(ask, model_brand)
    async with Listener(conversation.pk) as listener:
        await run(conversation.pk, seq)
        events = await listener.until(lambda e: e["type"] == "turn" and e["state"] == "idle")
    group = group_name(conversation.pk)
    deltas = [piece for e in events if e["type"] == "stream.delta" for piece in stream_pieces(e, group)]
    assert [index for _, index, _ in deltas] == list(range(5))
    stored = [e for e in events if e["type"] == "message"]
    assert len(stored) == 1 and stored[0]["payload"]["content"] == "".join(piece for _, _, piece in deltas)
    assert {stream_id for stream_id, _, _ in deltas} == {stored[0]["payload"]["streamId"]}
    # commit is announced after the answer, never before
    kinds = [e["type"] for e in events]
    assert kinds.index("message") < len(kinds) - 1 and kinds[-1] == "turn"


def test_the_answer_is_grounded_and_the_turn_ends_idle(model_brand, llm_server):
    conversation, seq = ask(model_brand, "Saya mau laptop untuk kerja")
    pipeline.run_generation(conversation.pk, seq)
    (answer,) = answers(conversation)
    assert answer.kind == "answer" and answer.payload["language"] == "id" and answer.payload["voice"] is False
    assert answer.payload["content"] == "Hello from the loopback model." and not answer.cut_off
    system = llm_server.requests[0].body["messages"][0]
    assert system["role"] == "system" and "Indonesian" in system["content"]
    conversation.refresh_from_db()
    assert conversation.turn_state == "idle" and "generation" not in conversation.meta
    path = [move for transition in conversation.transitions.all() for move in transition.moves()]
    assert path[-3:] == [
        ("user_committed", "ai_generating"),
        ("ai_generating", "ai_committed"),
        ("ai_committed", "idle"),
    ]


def test_running_the_task_twice_stores_one_answer(model_brand, llm_server):
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    pipeline.run_generation(conversation.pk, seq)
    assert len(answers(conversation)) == 1
    assert len(llm_server.requests) == 1


def test_a_model_error_falls_back_to_the_offline_answer(model_brand, llm_server):
    llm_server.queue(Reply(status=500))
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    (answer,) = answers(conversation)
    assert answer.payload["fallback"] is True and answer.payload["content"] and not answer.cut_off
    conversation.refresh_from_db()
    assert conversation.turn_state == "idle"


def test_a_model_error_without_fallback_ends_in_error_with_a_visible_message(model_brand, llm_server):
    model_brand.fallback_to_offline = False
    model_brand.save()
    llm_server.queue(Reply(status=503))
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    conversation.refresh_from_db()
    assert conversation.turn_state == "error" and conversation.last_error == pipeline.FAILED_MESSAGE
    assert answers(conversation) == []
    # The visitor can try again.
    services.conversation_accept_user_message(conversation.pk, "again?")


def test_a_stream_cut_mid_answer_is_kept_as_cut_off_and_the_fallback_answers(model_brand, llm_server):
    llm_server.queue(Reply(tokens=("Half", " an", " answer"), die_after=2))
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    partial, final = answers(conversation)
    assert partial.cut_off and partial.payload["content"] == "Half an"
    assert not final.cut_off and final.payload["fallback"] is True
    assert partial.payload["streamId"] != final.payload["streamId"]


def test_a_model_that_hangs_times_out(model_brand, llm_server, settings):
    settings.LLM_TIMEOUT_SECONDS = 1
    model_brand.fallback_to_offline = False
    model_brand.save()
    llm_server.queue(Reply(stall_after=1, tokens=("Slow", " ...")))
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    conversation.refresh_from_db()
    assert conversation.turn_state == "error"
    (partial,) = answers(conversation)
    assert partial.cut_off and partial.payload["content"] == "Slow"


def test_usage_is_counted_and_a_spent_budget_answers_with_a_notice(model_brand, llm_server):
    conversation, seq = ask(model_brand)
    pipeline.run_generation(conversation.pk, seq)
    assert tokens_used_today(model_brand.pk) == 6  # the loopback server's six default pieces
    model_brand.daily_token_budget = 10
    model_brand.save()
    record_usage(model_brand.pk, 4)
    second = services.conversation_accept_user_message(conversation.pk, "and another?")
    pipeline.run_generation(conversation.pk, second.seq)
    notice = answers(conversation)[-1]
    assert notice.payload["notice"] == "budget_spent" and "limit for today" in notice.payload["content"]
    assert len(llm_server.requests) == 1  # the model was not asked
    conversation.refresh_from_db()
    assert conversation.turn_state == "idle"


def test_the_offline_provider_needs_no_network(techpro):
    conversation, seq = ask(techpro)
    pipeline.run_generation(conversation.pk, seq)
    (answer,) = answers(conversation)
    assert answer.payload["content"] and "fallback" not in answer.payload


def test_answers_of_a_process_prepare_one_at_a_time_unless_configured(settings: Any) -> None:
    def overlap_seen(threads: int) -> int:
        inside, most, lock = [0], [0], threading.Lock()
        started = threading.Barrier(threads)

        def prepare() -> None:
            started.wait()
            with pipeline._preparing():
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.05)
                with lock:
                    inside[0] -= 1

        workers = [threading.Thread(target=prepare) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return most[0]

    pipeline._slots.clear()
    assert overlap_seen(4) == 1
    settings.GENERATION_PREPARE_CONCURRENCY = 3
    pipeline._slots.clear()
    try:
        assert overlap_seen(4) == 3
    finally:
        pipeline._slots.clear()

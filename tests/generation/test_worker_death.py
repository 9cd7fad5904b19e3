"""A worker that dies mid-answer: the broker delivers the task again (late acks), and the turn
ends with the streamed part kept as cut off and a visible error — never a second answer, never a
silent hang. Real processes: a Celery worker subprocess whose pool child is killed with SIGKILL."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from conversations import services
from conversations.generation import pipeline, streams
from conversations.models import Channel, Conversation, Message
from tests.live_worker import CeleryWorkerProcess, task_routed_to_private_queue
from tests.llm_server import Reply
from tests.protocols.sse_client import SSEEvent, read_stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fault]


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_worker_killed_mid_answer_leaves_one_cut_off_answer_and_a_visible_error(techpro, llm_server, daphne):
    techpro.llm_provider = "openai"
    techpro.llm_base_url = llm_server.url
    techpro.save()
    # Every request to the model stops after two pieces: a second generation would show up as a
    # second request and a second answer.
    llm_server.default = Reply(tokens=("Part", " one", " and", " more"), pause_after=2)
    with (
        task_routed_to_private_queue("conversations.tasks.generate_answer") as queue,
        CeleryWorkerProcess(queue, {"GENERATION_HEARTBEAT_SECONDS": "1"}) as worker,
    ):
        # Posted here rather than through daphne, so that the task goes to the private queue.
        conversation = services.conversation_open(techpro, Channel.SESSIONS, user_id="alice")
        user_seq = services.conversation_accept_user_message(conversation.pk, "hi").seq
        session_id = str(conversation.pk)
        stream_id = streams.stream_id_for(conversation.pk, user_seq, 1)
        assert llm_server.wait_for_tokens(2)
        wait_until(lambda: streams.read_tokens(session_id, stream_id) == ["Part", " one"])

        seen: list[SSEEvent] = []
        reader = threading.Thread(target=lambda: seen.extend(read_stream(f"{daphne.url}/sessions/{session_id}/stream")))
        reader.start()
        for child in worker.pool_children():
            child.kill()  # SIGKILL: no cleanup, no ack

        try:
            wait_until(lambda: Conversation.objects.get(pk=session_id).turn_state == "error")
        except AssertionError:
            print(worker.output())
            raise
        reader.join(30)

    conversation = Conversation.objects.get(pk=session_id)
    assert conversation.last_error == pipeline.INTERRUPTED_MESSAGE
    (partial,) = Message.objects.filter(conversation=conversation, direction="out")
    assert partial.cut_off and partial.payload["content"] == "Part one"
    assert len(llm_server.requests) == 1
    # The visitor's stream got what was streamed, then the error — it did not hang.
    assert [e.event for e in seen] == ["token", "token", "message_end", "error"]
    assert seen[-1].data == pipeline.INTERRUPTED_MESSAGE
    # And the visitor can go on.
    services.conversation_accept_user_message(conversation.pk, "again")


def test_a_thread_pool_worker_killed_mid_answer_takes_its_streaming_process_along(techpro, llm_server):
    """runstack's answers workers stream in a child process (GENERATION_STREAM_PROCESS): when the
    worker dies, that child must stop streaming at once, and the redelivered task recovers."""
    techpro.llm_provider = "openai"
    techpro.llm_base_url = llm_server.url
    techpro.save()
    llm_server.default = Reply(tokens=("Part", " one", " and", " more"), pause_after=2)
    env = {"GENERATION_HEARTBEAT_SECONDS": "1", "GENERATION_STREAM_PROCESS": "1", "CELERY_VISIBILITY_TIMEOUT": "3"}
    with task_routed_to_private_queue("conversations.tasks.generate_answer") as queue:
        with CeleryWorkerProcess(queue, env, pool="threads") as worker:
            conversation = services.conversation_open(techpro, Channel.SESSIONS, user_id="carol")
            user_seq = services.conversation_accept_user_message(conversation.pk, "hi").seq
            stream_id = streams.stream_id_for(conversation.pk, user_seq, 1)
            assert llm_server.wait_for_tokens(2), worker.output()
            wait_until(lambda: streams.read_tokens(str(conversation.pk), stream_id) == ["Part", " one"])
            streaming = [p for p in worker.pool_children() if "spawn_main" in " ".join(p.cmdline())]
            assert len(streaming) == 1, worker.output()
            assert worker.process is not None
            worker.process.kill()  # SIGKILL the worker alone: no cleanup, no ack
            worker.process.wait()
            # Nothing may go on streaming without the worker: its streaming process ends by itself.
            _, still_running = psutil.wait_procs(streaming, timeout=10)
            assert not still_running
        # A worker returns unacknowledged tasks older than the visibility timeout when it sweeps:
        # at its start, then only every ~100 s (kombu's restore interval times its throttle), so
        # the next worker starts once the task is old enough for its first sweep.
        time.sleep(float(env["CELERY_VISIBILITY_TIMEOUT"]) + 0.5)
        # The broker hands the unacknowledged task to the next worker, which finds the heartbeat
        # gone and keeps what was streamed.
        with CeleryWorkerProcess(queue, env, pool="threads") as second:
            try:
                wait_until(lambda: Conversation.objects.get(pk=conversation.pk).turn_state == "error", timeout=60)
            except AssertionError:
                print(second.output())
                raise
    (partial,) = Message.objects.filter(conversation=conversation, direction="out")
    assert partial.cut_off and partial.payload["content"] == "Part one"
    assert len(llm_server.requests) == 1
    assert Conversation.objects.get(pk=conversation.pk).last_error == pipeline.INTERRUPTED_MESSAGE


def test_a_redelivery_while_the_first_run_is_alive_leaves_the_turn_to_it(techpro, llm_server, settings):
    settings.GENERATION_HEARTBEAT_SECONDS = 1
    techpro.llm_provider = "openai"
    techpro.llm_base_url = llm_server.url
    techpro.save()
    llm_server.queue(Reply(tokens=("Still", " here", " done"), pause_after=1))
    with task_routed_to_private_queue("conversations.tasks.generate_answer"):
        conversation = services.conversation_open(techpro, Channel.SESSIONS, user_id="bob")
        seq = services.conversation_accept_user_message(conversation.pk, "hello").seq
        first = threading.Thread(target=pipeline.run_generation, args=(conversation.pk, seq))
        first.start()
        assert llm_server.wait_for_tokens(1)
        # The duplicate sees a fresh heartbeat for ~3 heartbeats, then gives up and leaves.
        pipeline.run_generation(conversation.pk, seq)
        llm_server.release()
        first.join(30)
    (answer,) = Message.objects.filter(conversation=conversation, direction="out")
    assert answer.payload["content"] == "Still here done" and not answer.cut_off
    assert Conversation.objects.get(pk=conversation.pk).turn_state == "idle"

"""`make run`'s stack as it starts (manage.py runstack: embedded Redis, daphne, the flow worker,
the answers worker, beat), driven over its sockets: streamed answers do not queue behind each
other, and the assistant's flow steps do not wait for them."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import websockets

from bench.stack import Stack, role_of, start_stack
from bench.streaming import configure_brand
from tests.llm_server import LLMServer, Reply

ANSWERS = 5  # more than the flow worker's two prefork children
TOKENS = [f"t{k} " for k in range(30)]
TOKEN_DELAY = 0.1  # each answer streams for ~3 s


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = start_stack(concurrency=2)
    try:
        yield running
    finally:
        running.stop()


async def ask(url: str, question: str) -> dict[str, Any]:
    """One brand-chat visitor: when the first chunk and the `complete` arrived, and the text."""
    async with websockets.connect(f"{url}/ws/chat/techpro") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "chat", "data": {"message": question, "conversation_id": None}}))
        first, pieces = None, []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert frame["type"] in {"chunk", "complete"}, frame
            if frame["type"] == "complete":
                return {"first": first, "complete": time.monotonic(), "text": "".join(pieces)}
            first = first or time.monotonic()
            pieces.append(frame["data"]["content"])


async def first_flow_question(url: str) -> float:
    """An assistant visitor: when the flow's first question arrived."""
    async with websockets.connect(f"{url}/ws/assistant/techpro/") as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("kind") == "ChoiceRequest":
                return time.monotonic()


async def answers_and_a_flow(url: str) -> tuple[list[dict[str, Any]], float]:
    asking = [asyncio.create_task(ask(url, f"which laptop for business, visitor {i}?")) for i in range(ANSWERS)]
    await asyncio.sleep(1.0)  # every answer is streaming by now
    question_at = await first_flow_question(url)
    return await asyncio.gather(*asking), question_at


def test_answers_stream_together_and_flows_do_not_wait_for_them(stack: Stack) -> None:
    llm = LLMServer(default=Reply(tokens=TOKENS, delay=TOKEN_DELAY)).start()
    try:
        configure_brand(stack, llm.url)
        answers, question_at = asyncio.run(answers_and_a_flow(stack.ws_url))
    finally:
        llm.stop()
    assert all(answer["text"] == "".join(TOKENS) for answer in answers)
    # All streamed at once: each one's first piece came before any of them was complete.
    first_complete = min(answer["complete"] for answer in answers)
    assert max(answer["first"] for answer in answers) < first_complete
    # The assistant's visitor was answered while the answers were still streaming.
    assert question_at < first_complete


def processes_by_role(stack: Stack) -> dict[str, list[psutil.Process]]:
    """The stack's processes, once the answers worker has started its streaming process."""
    deadline = time.monotonic() + 30
    while True:
        by_role: dict[str, list[psutil.Process]] = {}
        for process in psutil.Process(stack.root_pids[0]).children(recursive=True):
            by_role.setdefault(role_of(process), []).append(process)
        if by_role.get("streamer") or time.monotonic() > deadline:
            return by_role
        time.sleep(0.2)


def niceness(process: psutil.Process) -> set[int]:
    """The niceness of each of the process's threads (Linux sets it per thread)."""
    return {os.getpriority(os.PRIO_PROCESS, thread.id) for thread in process.threads()}


def test_the_answers_worker_steps_back_and_its_streaming_process_does_not(stack: Stack) -> None:
    """runstack's answers worker runs its threads at GENERATION_WORKER_NICE (10) once its
    streaming process has started at the stack's own priority: every thread, including those a
    thread pool starts later, which inherit it."""
    by_role = processes_by_role(stack)
    base = os.getpriority(os.PRIO_PROCESS, stack.root_pids[0])
    (answers,) = by_role["answers"]
    assert len(answers.threads()) > 1
    assert niceness(answers) == {base + 10}
    assert by_role["streamer"], "the answers worker has no streaming process"
    assert [niceness(streamer) for streamer in by_role["streamer"]] == [{base}] * len(by_role["streamer"])
    for role in ("daphne", "worker-main", "worker-child", "redis"):
        assert all(niceness(process) == {base} for process in by_role[role]), role


def test_with_the_settings_set_for_every_process_only_a_thread_pool_steps_back() -> None:
    """GENERATION_STREAM_PROCESS and GENERATION_WORKER_NICE in everyone's environment: the prefork
    flow worker's main process, which dispatches flow steps, neither steps back nor starts a
    streaming process of its own."""
    global_env = {"GENERATION_STREAM_PROCESS": "1", "GENERATION_WORKER_NICE": "10"}
    running = start_stack(concurrency=2, extra_env=global_env)
    try:
        by_role = processes_by_role(running)
        base = os.getpriority(os.PRIO_PROCESS, running.root_pids[0])
        (flow_worker,) = by_role["worker-main"]
        assert niceness(flow_worker) == {base}
        assert all(role_of(child) == "worker-child" for child in flow_worker.children())
        (answers,) = by_role["answers"]
        assert niceness(answers) == {base + 10}
    finally:
        running.stop()

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


def test_the_answers_worker_steps_back_and_its_streaming_process_does_not(stack: Stack) -> None:
    """runstack's answers worker runs its threads at GENERATION_WORKER_NICE (10) once its
    streaming process has started at the stack's own priority: every thread, including those a
    thread pool starts later, which inherit it."""
    tree = psutil.Process(stack.root_pids[0]).children(recursive=True)
    by_role: dict[str, list[psutil.Process]] = {}
    for process in tree:
        by_role.setdefault(role_of(process), []).append(process)
    (answers,) = by_role["answers"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not by_role.get("streamer"):
        time.sleep(0.2)  # the worker starts its streaming process once it is ready
        by_role["streamer"] = [p for p in answers.children() if role_of(p) == "streamer"]
    assert by_role["streamer"], "the answers worker has no streaming process"
    base = os.getpriority(os.PRIO_PROCESS, stack.root_pids[0])
    threads = [thread.id for thread in answers.threads()]
    assert len(threads) > 1
    assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} == {base + 10}
    for streamer in by_role["streamer"]:
        assert {os.getpriority(os.PRIO_PROCESS, thread.id) for thread in streamer.threads()} == {base}
    (daphne,) = by_role["daphne"]
    assert os.getpriority(os.PRIO_PROCESS, daphne.pid) == base

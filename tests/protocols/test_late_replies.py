"""LateReplies: one loop per event loop checks the sockets that wait for live events."""

from __future__ import annotations

import asyncio

from conversations.protocols.common import LateReplies


async def test_a_check_runs_after_its_time_and_again_while_it_asks_to():
    watcher = LateReplies()
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def check() -> bool:
        calls.append(loop.time() - began)
        return len(calls) < 3

    watcher.watch("socket", 0.05, check)
    await asyncio.sleep(0.6)
    assert len(calls) == 3
    assert calls[0] >= 0.05
    assert not watcher.due and not watcher.running


async def test_a_new_watch_replaces_the_old_one_and_forget_stops_it():
    watcher = LateReplies()
    seen: list[str] = []

    def recording(name: str):
        async def check() -> bool:
            seen.append(name)
            return False

        return check

    watcher.watch("a", 0.05, recording("first"))
    watcher.watch("a", 0.05, recording("second"))
    watcher.watch("b", 0.05, recording("forgotten"))
    watcher.forget("b")
    await asyncio.sleep(0.3)
    assert seen == ["second"]


async def test_forgetting_a_socket_cancels_its_running_check():
    watcher = LateReplies()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> bool:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    watcher.watch("socket", 0.01, slow)
    await asyncio.wait_for(started.wait(), 2)
    watcher.forget("socket")
    await asyncio.wait_for(cancelled.wait(), 2)
    assert not watcher.running and not watcher.due

"""The load: a separate process of asyncio WebSocket clients (aiohttp's, on uvloop).

    python -m bench.client '{"mode": "flow", "url": "ws://127.0.0.1:PORT", "n": 100, ...}'

prints one JSON object (the measurements) as its last stdout line. Modes:

- `flow`: N visitors each walk the demo language flow once (5 answers, see SCRIPT); step latency
  is from sending an answer to receiving the bot request that waits for the next one.
- `soak`: the same, each visitor starting a new conversation (a new socket, no cookie) when one
  ends, until `duration` seconds have passed.
- `idle`: open N assistant sockets, wait for each to show its first question, print `ready`, hold
  them open until a line arrives on stdin.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

from bench.runner import write_result
from flows.demo.walkthrough import WALKTHROUGH as SCRIPT  # the demo flow walked once

# Each conversation: the flow's start plus one step per answer.
STEPS_PER_CONVERSATION = 1 + len(SCRIPT)


class ConversationFailed(Exception):
    pass


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, needed + 256))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"count": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 2)}


@dataclass
class Tally:
    completed: int = 0
    steps: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    # flow: step latencies by the second (since the start) in which the answer was sent
    step_ms_by_second: dict[int, list[float]] = field(default_factory=dict)
    start_ms: list[float] = field(default_factory=list)
    # soak: (seconds since start, steps, errors) per 10 s window
    windows: dict[int, list[int]] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def error(self, text: str) -> None:
        self.errors += 1
        self._window()[1] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(text[:300])

    def step(self, ms: float, keep: bool) -> None:
        self.steps += 1
        self._window()[0] += 1
        if keep:
            self.step_ms.append(ms)
            if len(self.step_ms) < 200_000:
                second = int(time.monotonic() - ms / 1000 - self.t0)
                self.step_ms_by_second.setdefault(second, []).append(ms)

    def _window(self) -> list[int]:
        return self.windows.setdefault(int((time.monotonic() - self.t0) // 10) * 10, [0, 0])


def new_session() -> aiohttp.ClientSession:
    """One session for all the visitors of the process: no connection limit, and no cookie jar,
    so that each socket is a new visitor (the assistant sets its session cookie in the
    handshake)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True), cookie_jar=aiohttp.DummyCookieJar()
    )


async def open_socket(session: aiohttp.ClientSession, url: str, timeout: float) -> aiohttp.ClientWebSocketResponse:
    async with asyncio.timeout(timeout):
        return await session.ws_connect(
            url, compress=0, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
        )


async def _await_kind(
    ws: aiohttp.ClientWebSocketResponse, kind: str, group: str | None, timeout: float, last_seq: list[int]
) -> None:
    """Read until the bot request `kind` (with `groupId` group) arrives; Error frames fail."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConversationFailed(f"timeout waiting for {kind}")
        frame = await ws.receive(remaining)
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise ConversationFailed(f"socket closed ({frame.type.name}, {ws.close_code}) waiting for {kind}")
        message = json.loads(frame.data)
        got = message.get("kind")
        if got == "Error":
            raise ConversationFailed(f"Error {message.get('code')}: {message.get('message')}")
        seq = message.get("seq")
        if seq is not None:
            if seq <= last_seq[0]:
                raise ConversationFailed(f"seq went from {last_seq[0]} to {seq}")
            last_seq[0] = seq
        if got == kind and (group is None or message.get("groupId") == group):
            return


async def one_conversation(
    session: aiohttp.ClientSession, url: str, tally: Tally, think: float, timeout: float, keep: bool
) -> None:
    began = time.perf_counter()
    last_seq = [0]
    try:
        async with await open_socket(session, url, timeout) as ws:
            await _await_kind(ws, "ChoiceRequest", "lang", timeout, last_seq)
            tally.start_ms.append((time.perf_counter() - began) * 1000)
            tally.step(0.0, keep=False)  # the flow's start, as a step of CPU accounting
            for answer, kind, group in SCRIPT:
                if think:
                    await asyncio.sleep(think)
                sent = time.perf_counter()
                await ws.send_str(json.dumps(answer))
                await _await_kind(ws, kind, group, timeout, last_seq)
                tally.step((time.perf_counter() - sent) * 1000, keep)
        tally.completed += 1
    except ConversationFailed as exc:
        tally.error(str(exc))
    except (TimeoutError, OSError, Exception) as exc:
        tally.error(f"{type(exc).__name__}: {exc}")


async def run_flow(cfg: dict[str, Any]) -> dict[str, Any]:
    n, think, timeout = int(cfg["n"]), float(cfg.get("think", 0.0)), float(cfg.get("timeout", 120))
    url = cfg["url"].rstrip("/") + "/ws/assistant/techpro/"
    ramp = float(cfg.get("ramp_rate", 1000))
    duration = cfg.get("duration")  # soak
    tally = Tally()
    deadline = time.monotonic() + float(duration) if duration else None

    async def visitor(session: aiohttp.ClientSession, index: int) -> None:
        await asyncio.sleep(index / ramp)
        if think:
            # Spread the visitors over one think time so they do not answer in waves.
            await asyncio.sleep(random.uniform(0, think))
        while True:
            keep = deadline is None or len(tally.step_ms) < 2_000_000
            await one_conversation(session, url, tally, think, timeout, keep=keep)
            if deadline is None or time.monotonic() >= deadline:
                return

    began = time.perf_counter()
    cpu0 = time.process_time()
    async with new_session() as session:
        await asyncio.gather(*(visitor(session, i) for i in range(n)))
    wall = time.perf_counter() - began
    return {
        "mode": cfg["mode"],
        "n": n,
        "think_ms": think * 1000,
        "completed": tally.completed,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "steps": tally.steps,
        "answered_steps": len(tally.step_ms),
        "wall_s": round(wall, 2),
        "steps_per_s": round(tally.steps / wall, 1) if wall else None,
        "step_latency_ms": percentiles(tally.step_ms),
        "step_latency_ms_by_second": [
            {"second": second, **percentiles(values)} for second, values in sorted(tally.step_ms_by_second.items())
        ],
        "start_latency_ms": percentiles(tally.start_ms),
        "client_cpu_s": round(time.process_time() - cpu0, 2),
        "windows": [[t, *v] for t, v in sorted(tally.windows.items())],
    }


async def run_idle(cfg: dict[str, Any]) -> dict[str, Any]:
    n, timeout = int(cfg["n"]), float(cfg.get("timeout", 120))
    url = cfg["url"].rstrip("/") + "/ws/assistant/techpro/"
    gate = asyncio.Semaphore(int(cfg.get("parallel_opens", 200)))
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    errors: list[str] = []

    async def open_one(session: aiohttp.ClientSession) -> None:
        async with gate:
            try:
                ws = await open_socket(session, url, timeout)
                await _await_kind(ws, "ChoiceRequest", "lang", timeout, [0])
                sockets.append(ws)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    began = time.perf_counter()
    async with new_session() as session:
        await asyncio.gather(*(open_one(session) for _ in range(n)))
        print(json.dumps({"ready": len(sockets), "errors": len(errors)}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "mode": "idle",
        "n": n,
        "open": len(sockets),
        "errors": len(errors),
        "error_samples": errors[:20],
        "open_s": round(time.perf_counter() - began, 2),
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    raise_fd_limit(int(cfg.get("n", 100)) + 100)
    modes = {"flow": run_flow, "soak": run_flow, "idle": run_idle}
    # The load shares the machine's cores with the stack: a light client (uvloop, aiohttp) keeps
    # less of the measured latency its own.
    result = uvloop.run(modes[cfg["mode"]](cfg))
    write_result(cfg, result)


if __name__ == "__main__":
    main()

"""Streamed answers under load: M brand-chat visitors ask at the same moment, a loopback model answers.

    python -m bench --only stream --stream 10,100 --stream-tokens 200 --stream-rate 50

The model is a loopback OpenAI-compatible server (tests/llm_server.py's LLMServer, in the
benchmark's process) that streams `--stream-tokens` tokens per answer at `--stream-rate` tokens a
second and writes down, with `time.time()`, when it received each request and when it handed each
token to its socket. The bench stack's brand `techpro` is pointed at it (llm_provider openai, no
rate limit, no fallback, no budget). The clients are a separate process (`python -m
bench.streaming CONFIG`, aiohttp's client on uvloop as the flow's load): M sockets on
`/ws/chat/techpro`, each waits for `welcome`, then all send one `chat` at once and read
`chunk`s until `complete`, stamping every frame with `time.time()` on receipt (same machine,
same clock).

Measured per answer, then over all answers:
- TTFT overhead: (client's first chunk - client's send) - (model's first token - model's receipt
  of the request): what the stack adds before the first token (storing the message, the Celery
  hop, grounding, the model request) — queueing included;
- chunk delivery latency, per token, as the issue defines it: the client's receipt of the chunk
  that carried it - the worker's emit of it (its relay's `put`, written down by bench/emit_log.py
  in the benchmark's stack only), split at the web process's handling of the piece; also from
  the model's send of the token, which adds the worker's read of the model's stream (httpx);
- exactness: the chunks joined equal the model's tokens joined, and equal the answer stored in the
  stack's database (read through `manage.py shell` with the stack's environment).

The stack is the one `make run` starts: answers run on its answers worker, a Celery thread pool
(runstack's GENERATION_THREADS, raised to M if it is smaller), every answer at once;
`--stream-pool prefork` starts it without that worker (GENERATION_WORKERS=0), so the flow worker's
`--concurrency` prefork children run the answers one each (then answers queue, and TTFT shows it).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.stack import Stack

BRAND = "techpro"
TAG = re.compile(r"bench-stream-(\d+)")
QUESTION = "bench-stream-{index}: which laptop is good for business work?"
WARMUP_TOKENS = 5
# Chunk latency is also reported without each answer's first tokens: its start (claim, grounding,
# opening the model connection) competes with the other streams' tokens for the worker's CPU.
STEADY_AFTER = 25


def tokens_for(index: int, count: int) -> list[str]:
    """The model's answer to stream `index`: distinct per stream, so crossed streams show."""
    return [f"s{index}t{k} " for k in range(count)]


TOKEN = re.compile(r"s(\d+)t(\d+) ")


@dataclass
class StageTimes:
    """When each token (stream index, token number) was emitted by the worker and handled by the
    web process, and the worker's deliveries (start, end, pieces); bench/emit_log.py."""

    emitted: dict[tuple[int, int], float] = field(default_factory=dict)
    handled: dict[tuple[int, int], float] = field(default_factory=dict)
    deliveries: list[tuple[float, float, int]] = field(default_factory=list)


def _stage_times(path: Path, number: int) -> StageTimes | None:
    from bench.emit_log import read

    times = StageTimes()
    for entry in read(str(path), number):
        if entry[0] == "delivery":
            times.deliveries.append((entry[1], entry[2], entry[3]))
            continue
        into = times.emitted if entry[0] == "emit" else times.handled
        for found in TOKEN.finditer(entry[2]):  # a piece may carry several tokens
            into.setdefault((int(found.group(1)), int(found.group(2))), entry[1])
    return times if times.emitted else None


# --- The model: LLMServer with send times ----------------------------------------------------


@dataclass
class StreamLog:
    received: float
    sent: list[float] = field(default_factory=list)


def timed_llm_server(n_tokens: int, rate: float) -> Any:
    """An LLMServer whose streamed answers are tokens_for(tag) at a fixed rate, logging times."""
    from aiohttp import web

    from tests.llm_server import LLMServer, Reply

    class TimedLLMServer(LLMServer):
        def __init__(self) -> None:
            super().__init__(default=Reply(delay=1.0 / rate))
            self.n_tokens = n_tokens
            self.logs: dict[int, StreamLog] = {}

        async def _stream(
            self, request: web.Request, body: dict[str, Any], reply: Reply, completion_id: str
        ) -> web.StreamResponse:
            received = time.time()
            found = TAG.search(str(body.get("messages", [])[-1:]))
            index = int(found.group(1)) if found else -1
            log = self.logs[index] = StreamLog(received)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await response.prepare(request)
            model = body.get("model") or self.model

            def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
                data = {"id": completion_id, "object": "chat.completion.chunk", "created": int(received),
                        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
                return f"data: {json.dumps(data)}\n\n".encode()

            await response.write(chunk({"role": "assistant"}))
            loop = asyncio.get_running_loop()
            start = loop.time()
            for k, token in enumerate(tokens_for(index, self.n_tokens)):
                # A fixed schedule (not sleep-per-token) so the rate does not drift under load.
                await asyncio.sleep(max(0.0, start + (k + 1) * reply.delay - loop.time()))
                log.sent.append(time.time())
                await response.write(chunk({"content": token}))
            await response.write(chunk({}, "stop"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response

    return TimedLLMServer()


# --- The stack's brand -------------------------------------------------------------------------

CONFIGURE = """
from flows.models import Brand
changed = Brand.objects.filter(slug={brand!r}).update(
    llm_provider="openai", llm_base_url={url!r}, llm_model="bench-loopback", llm_api_key="",
    rate_limit_per_minute=0, fallback_to_offline=False, daily_token_budget=0)
print(changed)
"""

STORED = """
import json, sys
from conversations.models import Message
ids = json.loads(sys.stdin.read())
out = {}
for cid, payload, cut_off in Message.objects.filter(
        conversation_id__in=ids, direction="out", kind="answer").values_list("conversation_id", "payload", "cut_off"):
    out.setdefault(str(cid), []).append({"content": (payload or {}).get("content"), "cut_off": cut_off})
print(json.dumps(out))
"""


def configure_brand(stack: Stack, llm_url: str) -> None:
    changed = stack.manage("shell", "-c", CONFIGURE.format(brand=BRAND, url=llm_url)).strip().splitlines()[-1]
    if changed != "1":
        raise RuntimeError(f"brand {BRAND!r} not found in the bench stack")


def stored_answers(stack: Stack, conversation_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out = stack.manage("shell", "-c", STORED, input_text=json.dumps(conversation_ids))
    return dict(json.loads(out.strip().splitlines()[-1]))


# --- The benchmark part (in the benchmark's process) --------------------------------------------


def run_streaming(stacks: Any, args: Any) -> list[dict[str, Any]]:
    from bench.emit_log import flush as flush_log
    from bench.emit_log import forget as forget_log
    from bench.profile import Profiler
    from bench.runner import run_client
    from bench.stack import ServerWatch

    results: list[dict[str, Any]] = []
    for m in [int(x) for x in str(args.stream).split(",") if x]:
        if args.url:
            results.append({"m": m, "available": False, "reason": "needs a stack the benchmark starts (--url given)"})
            continue
        pool = getattr(args, "stream_pool", "threads")
        emit_log = Path(tempfile.gettempdir()) / f"botsite-bench-emit-{os.getpid()}-{m}.jsonl"
        if pool == "threads":
            # The stack as `make run` starts it, its answers workers given a thread for each
            # answer if they have fewer (runstack's default is one worker of 100), plus the emit log.
            processes = max(1, int(os.environ.get("GENERATION_WORKERS", "1")))
            threads = max(-(-m // processes), int(os.environ.get("GENERATION_THREADS", "100")))
            stack = stacks.fresh(
                {
                    "DJANGO_SETTINGS_MODULE": "bench.stream_settings",
                    "BENCH_BASE_SETTINGS": stacks.settings_module(),
                    "BENCH_EMIT_LOG": str(emit_log),
                    "GENERATION_THREADS": str(threads),
                }
            )
            workers = f"{threads} threads" if processes == 1 else f"{processes}x{threads} threads"
        else:
            # No answers worker: the flow worker's prefork children run the answers, one each.
            # The stack's own settings: no emit times (the model's send is used).
            stack = stacks.fresh({"GENERATION_WORKERS": "0"})
            workers = f"{args.concurrency} prefork"
        print(f"  stream: {m} answers of {args.stream_tokens} tokens at {args.stream_rate}/s ({workers}) …",
              file=sys.stderr, flush=True)  # fmt: skip
        llm = timed_llm_server(args.stream_tokens, args.stream_rate).start()
        try:
            configure_brand(stack, llm.url)
            cfg = {"url": stack.ws_url, "m": m, "timeout": args.timeout, "brand": BRAND}
            # Warm up: each worker thread's first answer opens its Redis, channel-layer and DB
            # connections; that is a one-off cost, not the steady state measured here.
            llm.n_tokens = WARMUP_TOKENS
            run_client(cfg, module="bench.streaming")
            time.sleep(1)
            llm.n_tokens, llm.logs = args.stream_tokens, {}
            if pool == "threads":
                flush_log(str(emit_log), 1)  # the warm-up's entries, dropped
            forget_log(str(emit_log))
            watch = ServerWatch(stack.root_pids).start()
            profiler = Profiler.start(watch, args.profile, label=f"stream-{m}") if args.profile else None
            client = run_client(cfg, module="bench.streaming")
            server = watch.stop()
            if pool == "threads":
                flush_log(str(emit_log), 2)  # the stack's processes write down this run's times
        finally:
            llm.stop()
        stages = _stage_times(emit_log, 2)
        forget_log(str(emit_log))
        ids = [s["conversation_id"] for s in client["streams"] if s["conversation_id"]]
        stored = stored_answers(stack, ids)
        result = analyse(m, args.stream_tokens, client, llm.logs, stored, stages)
        result.update(workers=workers, server=server, tokens=args.stream_tokens, rate=args.stream_rate)
        if server["cpu_s"] and result["chunks"]:
            result["server_cpu_ms_per_token"] = round(server["cpu_s"] * 1000 / (m * args.stream_tokens), 3)
        if profiler is not None:
            result["profiles"] = profiler.wait(top=30)
        results.append(result)
    return results


def analyse(
    m: int,
    n_tokens: int,
    client: dict[str, Any],
    logs: dict[int, StreamLog],
    stored: dict[str, list[dict[str, Any]]],
    stages: StageTimes | None = None,
) -> dict[str, Any]:
    """Per token: `chunk_ms` from the worker's emit to the client's receipt (the issue's chunk
    delivery latency; without emit times, e.g. a prefork stack, from the model's send), and
    `model_to_client_ms` from the model's send, which adds the worker's read of the model's
    stream (`model_to_emit_ms`). With stage times the emit → client path is also split at the
    web process's handling of the piece (`emit_to_web_ms`, `web_to_client_ms`)."""
    emitted = stages.emitted if stages is not None else None
    handled_at = stages.handled if stages is not None else {}
    from bench.client import percentiles

    ttft_overhead: list[float] = []
    model_ttft: list[float] = []
    chunk_ms: list[float] = []
    model_to_client_ms: list[float] = []
    model_to_emit_ms: list[float] = []
    emit_to_web_ms: list[float] = []
    web_to_client_ms: list[float] = []
    steady_ms: list[float] = []
    per_stream_p99: list[float] = []
    problems: list[str] = []
    completed = matches_model = matches_db = chunks = 0
    # Chunk latency by the second (since the first token of the run) the model sent the token:
    # does a backlog form, and does it drain?
    by_second: dict[int, list[float]] = {}
    # The emit → client split by that second too: is a slow second the worker's or the web's?
    split_by_second: dict[int, tuple[list[float], list[float], list[float]]] = {}
    # A piece leaves in the first delivery that starts after its emit (they run one at a time).
    deliveries = sorted(stages.deliveries) if stages is not None else []
    delivery_starts = [start for start, _, _ in deliveries]
    first_send = min((log.sent[0] for log in logs.values() if log.sent), default=0.0)
    for stream in client["streams"]:
        index = stream["index"]
        tokens = tokens_for(index, n_tokens)
        expected = "".join(tokens)
        received = "".join(text for _, text in stream["chunks"])
        log = logs.get(index)
        if stream["error"]:
            got = f"{len(stream['chunks'])} chunks, {len(received)} of {len(expected)} chars"
            problems.append(f"#{index}: {stream['error']} after {got}")
            continue
        completed += 1
        chunks += len(stream["chunks"])
        rows = stored.get(stream["conversation_id"] or "", [])
        final = [row["content"] for row in rows if not row["cut_off"]]
        if received == expected:
            matches_model += 1
        else:
            sizes = f"{len(received)} vs {len(expected)} chars"
            problems.append(f"#{index}: chunks differ from the model's tokens ({sizes})")
        if final == [received]:
            matches_db += 1
        else:
            problems.append(f"#{index}: chunks differ from the stored answer ({len(rows)} stored rows)")
        if log is None or len(log.sent) != n_tokens or received != expected or not stream["chunks"]:
            continue
        model_ttft.append((log.sent[0] - log.received) * 1000)
        ttft_overhead.append((stream["chunks"][0][0] - stream["sent_at"] - (log.sent[0] - log.received)) * 1000)
        # Which chunk carried each token: the first whose cumulative text covers the token's end.
        mine: list[float] = []
        from_model: list[float] = []
        position, k, end = 0, 0, len(tokens[0])
        for at, text in stream["chunks"]:
            position += len(text)
            while k < n_tokens and end <= position:
                from_model.append((at - log.sent[k]) * 1000)
                if emitted is not None and (index, k) in emitted:
                    mine.append((at - emitted[index, k]) * 1000)
                    model_to_emit_ms.append((emitted[index, k] - log.sent[k]) * 1000)
                    handled = handled_at.get((index, k))
                    if handled is not None:
                        emit_to_web_ms.append((handled - emitted[index, k]) * 1000)
                        web_to_client_ms.append((at - handled) * 1000)
                        split = split_by_second.setdefault(int(log.sent[k] - first_send), ([], [], []))
                        split[0].append(emit_to_web_ms[-1])
                        split[1].append(web_to_client_ms[-1])
                        carrier = bisect.bisect_left(delivery_starts, emitted[index, k])
                        if carrier < len(deliveries):
                            split[2].append((deliveries[carrier][1] - emitted[index, k]) * 1000)
                elif emitted is None:
                    mine.append(from_model[-1])
                else:
                    problems.append(f"#{index}: no emit time for token {k}")
                k += 1
                end += len(tokens[k]) if k < n_tokens else 0
        chunk_ms.extend(mine)
        model_to_client_ms.extend(from_model)
        steady_ms.extend(mine[STEADY_AFTER:])
        for sent, latency in zip(log.sent, mine, strict=False):
            by_second.setdefault(int(sent - first_send), []).append(latency)
        per_stream_p99.append(percentiles(mine)["p99"] or 0.0)
    return {
        "m": m,
        "available": True,
        "completed": completed,
        "errors": m - completed,
        "all_match_model": matches_model == m,
        "all_match_db": matches_db == m,
        "problems": problems[:20],
        "chunks": chunks,
        "wall_s": client["wall_s"],
        "client_cpu_s": client["client_cpu_s"],
        "model_ttft_ms": percentiles(model_ttft),
        "ttft_overhead_ms": percentiles(ttft_overhead),
        "chunk_from": "worker emit" if emitted is not None else "model send",
        "chunk_ms": percentiles(chunk_ms),
        "model_to_client_ms": percentiles(model_to_client_ms),
        "model_to_emit_ms": percentiles(model_to_emit_ms),
        "emit_to_web_ms": percentiles(emit_to_web_ms),
        "web_to_client_ms": percentiles(web_to_client_ms),
        "deliveries": _deliveries(stages),
        f"chunk_ms_after_token_{STEADY_AFTER}": percentiles(steady_ms),
        "worst_stream_chunk_p99_ms": max(per_stream_p99, default=None),
        "chunk_ms_by_second": [
            {"second": second, **percentiles(values)} for second, values in sorted(by_second.items())
        ],
        "split_ms_by_second": [
            {
                "second": second,
                "emit_to_delivered": percentiles(to_delivered),
                "emit_to_web": percentiles(to_web),
                "web_to_client": percentiles(to_client),
            }
            for second, (to_web, to_client, to_delivered) in sorted(split_by_second.items())
        ],
    }


def _deliveries(stages: StageTimes | None) -> dict[str, Any] | None:
    """The worker's relay deliveries: how many, their pieces and their duration."""
    from bench.client import percentiles

    if stages is None or not stages.deliveries:
        return None
    return {
        "count": len(stages.deliveries),
        "pieces": percentiles([float(n) for _, _, n in stages.deliveries]),
        "ms": percentiles([(end - start) * 1000 for start, end, _ in stages.deliveries]),
    }


# --- The clients (a separate process) ------------------------------------------------------------


async def one_visitor(
    session: Any, url: str, index: int, go: asyncio.Event, ready: list[int], timeout: float
) -> dict[str, Any]:
    import aiohttp

    from bench.client import open_socket

    out: dict[str, Any] = {"index": index, "conversation_id": None, "sent_at": None, "chunks": [], "error": None}
    try:
        ws = await open_socket(session, url, timeout)
        try:
            welcome = json.loads((await ws.receive(timeout)).data)
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"first frame {welcome!r}")
            ready.append(index)
            await go.wait()
            chat = {"type": "chat", "data": {"message": QUESTION.format(index=index), "conversation_id": None}}
            out["sent_at"] = time.time()
            await ws.send_str(json.dumps(chat))
            deadline = time.monotonic() + timeout
            while True:
                received = await ws.receive(max(0.001, deadline - time.monotonic()))
                at = time.time()
                if received.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"socket closed ({received.type.name}, {ws.close_code})")
                frame = json.loads(received.data)
                data = frame.get("data") or {}
                if frame.get("type") == "chunk":
                    out["chunks"].append((at, data.get("content", "")))
                    out["conversation_id"] = data.get("conversation_id")
                elif frame.get("type") == "complete":
                    out["conversation_id"] = data.get("conversation_id")
                    out["complete_at"] = at
                    return out
                elif frame.get("type") == "error":
                    raise RuntimeError(f"error frame: {data.get('message')}")
        finally:
            await ws.close()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


async def run_visitors(cfg: dict[str, Any]) -> dict[str, Any]:
    m, timeout = int(cfg["m"]), float(cfg.get("timeout", 120))
    url = cfg["url"].rstrip("/") + f"/ws/chat/{cfg.get('brand', BRAND)}"
    from bench.client import new_session

    go = asyncio.Event()
    ready: list[int] = []
    session = new_session()
    tasks = [asyncio.create_task(one_visitor(session, url, i, go, ready, timeout)) for i in range(m)]
    deadline = time.monotonic() + timeout
    while len(ready) < m and time.monotonic() < deadline and not all(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    began, cpu0 = time.perf_counter(), time.process_time()
    go.set()  # everyone asks at the same moment
    streams = await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    await session.close()
    return {
        "m": m,
        "wall_s": round(time.perf_counter() - began, 2),
        "client_cpu_s": round(cpu, 2),
        "streams": streams,
    }


def main() -> None:
    import uvloop

    from bench.client import raise_fd_limit
    from bench.runner import write_result

    cfg = json.loads(sys.argv[1])
    raise_fd_limit(int(cfg["m"]) + 100)
    # Light, as the flow's load (bench/client.py): aiohttp's C frame reader on uvloop.
    write_result(cfg, uvloop.run(run_visitors(cfg)))


if __name__ == "__main__":
    main()

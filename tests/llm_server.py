"""A small OpenAI-compatible chat-completions server of ours, on loopback, for tests and demos.

It speaks `POST {url}/chat/completions` (streamed as SSE `data: {...}` lines ending with
`data: [DONE]`, or one JSON body when `stream` is false) and `GET {url}/models`, where `url` is
`http://127.0.0.1:PORT/v1` — what a brand's `llm_base_url` holds.

Each request is answered by a `Reply`: the next one queued with `queue()`, else `default`.
A reply can fail in the ways a real model server fails: an error status, hanging before any
byte, stalling mid-stream, or the connection dropping mid-stream. `pause_after` holds a stream
after N tokens until `release()` — tests use it to act "mid-answer" without sleeping.

In tests: the `llm_server` fixture (tests/conftest.py). By hand:
    .venv/bin/python -m tests.llm_server --port 8001 --tokens "Hello, there!" --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_TOKENS = ("Hello", " from", " the", " loopback", " model", ".")


@dataclass
class Reply:
    """How to answer one chat-completions request."""

    tokens: tuple[str, ...] | list[str] = DEFAULT_TOKENS
    status: int = 200  # not 200: answer with this status and an OpenAI-style JSON error
    delay: float = 0.0  # seconds between tokens
    hang: bool = False  # accept the request, never answer (a timeout for the client)
    stall_after: int | None = None  # send this many tokens, then hang
    die_after: int | None = None  # send this many tokens, then drop the connection
    pause_after: int | None = None  # send this many tokens, then wait for release()
    finish_reason: str = "stop"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    peer: Any = None  # the client's (host, port): which connection the request came on


@dataclass
class LLMServer:
    host: str = "127.0.0.1"
    port: int = 0
    model: str = "loopback-1"
    default: Reply = field(default_factory=Reply)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queued: list[Reply] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._tokens_sent = 0
        self._sent_changed = threading.Condition()
        self._streams_started = 0

    # --- control, from any thread -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL an OpenAI client expects (ends with /v1, no trailing slash)."""
        return f"http://{self.host}:{self.port}/v1"

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; then `default` again."""
        with self._lock:
            self._queued.extend(replies)

    def set_tokens(self, tokens: list[str] | tuple[str, ...], delay: float = 0.0) -> None:
        self.default = Reply(tokens=tuple(tokens), delay=delay)

    def release(self) -> None:
        """Let every stream held by `pause_after` go on."""
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    @property
    def tokens_sent(self) -> int:
        return self._tokens_sent

    def wait_for_tokens(self, count: int, timeout: float = 30.0) -> bool:
        """Block until `count` tokens in total have been written to clients."""
        deadline = time.monotonic() + timeout
        with self._sent_changed:
            while self._tokens_sent < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._sent_changed.wait(remaining)
        return True

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> LLMServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_site())
            loop.close()

        self._thread = threading.Thread(target=run, name="llm-server", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop

        def begin_stop() -> None:
            assert self._stopping is not None and self._release is not None
            self._stopping.set()
            self._release.set()
            loop.stop()

        loop.call_soon_threadsafe(begin_stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the server, in its own thread's event loop ---------------------------------------------

    async def _start_site(self) -> None:
        self._release = asyncio.Event()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queued.pop(0) if self._queued else self.default

    def _count_token(self) -> None:
        with self._sent_changed:
            self._tokens_sent += 1
            self._sent_changed.notify_all()

    async def _forever(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            invalid = {"error": {"message": "invalid JSON", "type": "invalid_request_error"}}
            return web.json_response(invalid, status=400)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(Received(request.path, dict(request.headers), body, peer))
        reply = self._next_reply()
        if reply.hang:
            await self._forever()
            return web.Response(status=503)
        if reply.status != 200:
            error = {"error": {"message": f"loopback failure {reply.status}", "type": "server_error"}}
            return web.json_response(error, status=reply.status)
        completion_id = f"chatcmpl-{len(self.requests)}"
        if not body.get("stream"):
            text = "".join(reply.tokens)
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "model": body.get("model") or self.model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(reply.tokens), "total_tokens": 1},
                }
            )
        return await self._stream(request, body, reply, completion_id)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, completion_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        model = body.get("model") or self.model

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        # A role-only first chunk, as OpenAI sends; clients must skip deltas without content.
        await response.write(chunk({"role": "assistant"}))
        for index, token in enumerate(reply.tokens):
            if reply.die_after is not None and index >= reply.die_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if reply.stall_after is not None and index >= reply.stall_after:
                await self._forever()
                return response
            if reply.pause_after is not None and index == reply.pause_after:
                assert self._release is not None
                await self._release.wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await response.write(chunk({"content": token}))
            self._count_token()
        await response.write(chunk({}, reply.finish_reason))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback OpenAI-compatible streaming server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--tokens", default="Hello from the loopback model.", help="answer text, split at spaces")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    args = parser.parse_args()
    words = args.tokens.split(" ")
    tokens = [words[0], *(" " + w for w in words[1:])]
    server = LLMServer(host=args.host, port=args.port, default=Reply(tokens=tokens, delay=args.delay)).start()
    print(f"OpenAI-compatible server at {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

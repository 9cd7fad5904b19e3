"""The OpenAI-compatible provider keeps its connections to a model from one answer to the next."""

import asyncio
import json

import pytest

from conversations.generation import providers
from conversations.generation.base import GenerationRequest
from conversations.generation.providers import OpenAICompatibleProvider, OpenAIConfig


@pytest.fixture
async def closing_session():
    """The test loop's shared client session is closed with the test (the worker's lives as long
    as its streaming loop)."""
    yield
    await providers._sessions.get().close()
    providers._sessions.clear()


def _provider(base_url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(OpenAIConfig(base_url=base_url, model="m", api_key="", timeout=5.0))


async def _answer(provider: OpenAICompatibleProvider) -> str:
    return "".join([piece async for piece in provider.stream(GenerationRequest(brand_name="B", user_text="hi"))])


async def test_answers_in_a_row_reuse_one_connection(llm_server, closing_session):
    llm_server.set_tokens(["Hello", " again"])
    provider = _provider(llm_server.url)

    assert await _answer(provider) == "Hello again"
    assert await _answer(provider) == "Hello again"

    first, second = llm_server.requests
    assert first.peer is not None
    assert second.peer == first.peer


async def test_a_kept_connection_the_server_closes_on_reuse_is_replaced(closing_session):
    """A server whose first connection answers once, then hangs up on the next request it reads
    there (as a server whose idle limit ran out at that moment): the answer comes on a new one."""
    connections = 0
    sse = ("data: " + json.dumps({"choices": [{"delta": {"content": "fresh"}}]}) + "\n\ndata: [DONE]\n\n").encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        answered = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if mine == 1 and answered == 1:
                writer.close()  # the request was read; no answer, the connection goes
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + f"Content-Length: {len(sse)}\r\n\r\n".encode()
                + sse
            )
            await writer.drain()
            answered += 1

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        provider = _provider(f"http://127.0.0.1:{port}")
        assert await _answer(provider) == "fresh"
        assert await _answer(provider) == "fresh"
        assert connections == 2
    finally:
        server.close()

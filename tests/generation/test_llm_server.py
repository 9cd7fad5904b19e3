"""The loopback model server behaves like an OpenAI-compatible one, failures included."""

import json

import httpx
import pytest

from tests.llm_server import Reply


def _deltas(lines: list[str]) -> list[str]:
    pieces = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if "content" in delta:
                pieces.append(delta["content"])
    return pieces


def test_it_streams_the_configured_tokens_and_ends_with_done(llm_server):
    llm_server.set_tokens(["Hi", " there", "\nfriend"])
    with httpx.stream(
        "POST",
        f"{llm_server.url}/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert _deltas(lines) == ["Hi", " there", "\nfriend"]
    assert lines[-1] == "data: [DONE]"
    assert llm_server.requests[0].body["messages"][0]["content"] == "hello"


def test_it_answers_without_streaming_when_asked(llm_server):
    response = httpx.post(f"{llm_server.url}/chat/completions", json={"messages": [], "stream": False})
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the loopback model."


def test_it_fails_with_the_queued_status_then_recovers(llm_server):
    llm_server.queue(Reply(status=503))
    first = httpx.post(f"{llm_server.url}/chat/completions", json={"messages": [], "stream": True})
    assert first.status_code == 503 and "error" in first.json()
    second = httpx.post(f"{llm_server.url}/chat/completions", json={"messages": [], "stream": False})
    assert second.status_code == 200


def test_it_drops_the_connection_mid_stream(llm_server):
    llm_server.queue(Reply(tokens=("a", "b", "c"), die_after=2))
    received = []
    with (
        pytest.raises(httpx.HTTPError),
        httpx.stream("POST", f"{llm_server.url}/chat/completions", json={"messages": [], "stream": True}) as response,
    ):
        for line in response.iter_lines():
            received.append(line)
    assert _deltas(received) == ["a", "b"]


def test_a_hanging_reply_times_the_client_out(llm_server):
    llm_server.queue(Reply(hang=True))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{llm_server.url}/chat/completions", json={"messages": [], "stream": True}, timeout=0.3)


def test_a_paused_stream_goes_on_after_release(llm_server):
    llm_server.queue(Reply(tokens=("one", " two"), pause_after=1))
    with httpx.stream("POST", f"{llm_server.url}/chat/completions", json={"messages": [], "stream": True}) as response:
        lines = response.iter_lines()
        first = [next(lines) for _ in range(4)]  # role chunk, blank, first token, blank
        assert _deltas(first) == ["one"]
        assert llm_server.wait_for_tokens(1)
        llm_server.release()
        rest = list(lines)
    assert _deltas(rest) == [" two"]


async def test_model_lines_end_at_lf_crlf_or_cr_even_when_split_across_reads():
    import asyncio

    import aiohttp
    from aiohttp.base_protocol import BaseProtocol

    from conversations.generation.providers import _lines

    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    for data in (b"data: {\xc3", b"\xa9}\r\n\r", b"\ndata: two\rdata: three\n\nda", b"ta: [DONE]"):
        reader.feed_data(data)
    reader.feed_eof()
    lines = [line async for line in _lines(reader)]
    assert [line for line in lines if line] == ["data: {\u00e9}", "data: two", "data: three", "data: [DONE]"]

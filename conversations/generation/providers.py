"""LLM providers behind one small interface (`base.Provider`), chosen per brand from a registry.

`offline` answers from the brand's catalog without any model; `openai` streams from any
OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server). Its base
URL, model and API key come from the brand (set in the admin) or else from the LLM_* settings.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import certifi
from django.conf import settings

from botsite.eventloop import LoopLocal
from conversations.generation.base import GenerationRequest, Provider, ProviderError, split_words
from conversations.generation.offline import OfflineProvider
from flows.models import Brand

# Seconds to open a connection; reads use the brand's / LLM_TIMEOUT_SECONDS timeout.
CONNECT_TIMEOUT = 5.0
LANGUAGE_NAMES = {"en": "English", "id": "Indonesian (Bahasa Indonesia)"}


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str
    model: str
    api_key: str
    timeout: float

    @classmethod
    def for_brand(cls, brand: Brand) -> OpenAIConfig:
        return cls(
            base_url=(brand.llm_base_url or settings.LLM_BASE_URL or "https://api.openai.com/v1").rstrip("/"),
            model=brand.llm_model or settings.LLM_MODEL or "gpt-4o-mini",
            api_key=brand.llm_api_key or settings.LLM_API_KEY,
            timeout=float(settings.LLM_TIMEOUT_SECONDS),
        )


def build_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The chat the model sees: instructions with the catalog matches, the history, the question."""
    lines = [
        f"You are the shopping assistant of {request.brand_name}. Answer briefly and only from the "
        "products listed below; never invent products, prices or specifications.",
        f"Answer in {LANGUAGE_NAMES.get(request.language, 'English')}.",
    ]
    if request.voice:
        lines.append("The answer is read aloud: one short sentence, no lists, no markdown.")
    if request.system_prompt:
        lines.append(request.system_prompt)
    if request.products:
        lines.append("Matching products (JSON):")
        for scored in request.products:
            lines.append(json.dumps(scored.product, ensure_ascii=False, default=str))
    else:
        lines.append("No product matches the question; ask what the visitor needs.")
    messages = [{"role": "system", "content": "\n".join(lines)}]
    messages += [{"role": turn.role, "content": turn.content} for turn in request.history if turn.content]
    messages.append({"role": "user", "content": request.user_text})
    return messages


def parse_sse_line(line: str) -> str | None:
    """The text of one `data: {...}` line of a streamed completion; "" for lines without text.

    Returns None at `data: [DONE]`.
    """
    if not line.startswith("data:"):
        return ""  # comments, `event:` lines, blank separators
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"the model sent invalid JSON: {data[:80]!r}") from exc
    if isinstance(chunk, dict) and "error" in chunk:
        raise ProviderError(f"the model reported an error: {str(chunk['error'])[:200]}")
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""  # e.g. a usage-only chunk with no choices
    return content if isinstance(content, str) else ""


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One context per process: building one loads the CA bundle (~10 ms of CPU)."""
    return ssl.create_default_context(cafile=certifi.where())


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The lines of a streamed body (`\r\n`, `\n` and `\r` end a line), split per network read:
    aiohttp's readline costs several awaits per line, and a model sends one small line per token."""
    rest = b""
    async for data in content.iter_any():
        if rest:
            data = rest + data
        if b"\r" in data:  # a `\r\n` split across two reads only adds a blank line, which SSE ignores
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = data.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")  # UTF-8 never has a \n byte inside a character
    if rest:
        yield rest.decode("utf-8", "replace")


# Seconds an unused connection to a model is kept for the next answer (under most servers' own
# idle limits, so that it is rarely the server that closes it first).
KEEPALIVE_SECONDS = 15.0


def _new_session() -> aiohttp.ClientSession:
    """The loop's HTTP client: its connections to models are kept and reused from one answer to the
    next, instead of a TCP (and TLS) handshake per answer. trust_env: proxies from the environment."""
    connector = aiohttp.TCPConnector(limit=0, ssl=_ssl_context(), keepalive_timeout=KEEPALIVE_SECONDS)
    return aiohttp.ClientSession(connector=connector, trust_env=True)


# One per event loop: the worker's streaming loop runs every answer of its process.
_sessions: LoopLocal[aiohttp.ClientSession] = LoopLocal(_new_session)


async def _post(url: str, **kwargs: Any) -> aiohttp.ClientResponse:
    """POST and wait for the response's head. A kept connection that the server closed just as it
    was reused fails before any answer began: that one is tried again, once, on a new connection."""
    try:
        return await _sessions.get().post(url, **kwargs)
    except aiohttp.ClientConnectorError:
        raise  # a new connection that could not be opened: nothing stale to replace
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await _sessions.get().post(url, **kwargs)


# How long a stream may keep sending after `[DONE]` before its connection is dropped, not pooled.
DONE_GRACE = 0.5


async def _read_to_end(response: aiohttp.ClientResponse) -> None:
    """Read what follows `[DONE]` (the end of the chunked body, usually already here): a connection
    goes back to the session's pool only once its response was read to the end. A server that goes
    on sending gets DONE_GRACE seconds, then its connection is closed instead."""
    try:
        async with asyncio.timeout(DONE_GRACE):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


class OpenAICompatibleProvider:
    """Streams with aiohttp: per streamed chunk its C parser and line reader cost ~60-80 us of CPU
    against ~400 us for httpx (anyio cancel scopes and h11 events per read) with 100 streams."""

    name = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": build_messages(request),
            "stream": True,
            "temperature": request.options.get("temperature", 0.3),
        }
        if request.voice:
            body["max_tokens"] = 80
        headers = {"Accept": "text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        # `sock_read` bounds the silence between two chunks, so a model that stalls mid-answer fails too.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(CONNECT_TIMEOUT, self.config.timeout), sock_read=self.config.timeout
        )
        url = f"{self.config.base_url}/chat/completions"
        try:
            async with await _post(url, json=body, headers=headers, timeout=timeout) as response:
                if response.status != 200:
                    detail = (await response.read())[:200].decode("utf-8", "replace")
                    raise ProviderError(f"the model answered HTTP {response.status}: {detail}")
                async for line in _lines(response.content):
                    piece = parse_sse_line(line)
                    if piece is None:
                        await _read_to_end(response)
                        return
                    if piece:
                        yield piece
        except TimeoutError as exc:  # aiohttp's read and connect timeouts are TimeoutErrors
            raise ProviderError(f"the model timed out ({type(exc).__name__})") from exc
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a line past the reader's limit
            raise ProviderError(f"the model connection failed ({type(exc).__name__}: {exc})") from exc
        # The stream ended without [DONE]: the server went away mid-answer.
        raise ProviderError("the model's stream ended before [DONE]")


class FixedTextProvider:
    """Streams a given text; used for notices such as a spent daily budget (no model call)."""

    name = "notice"

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        for piece in split_words(self.text):
            yield piece


PROVIDERS: dict[str, Callable[[Brand], Provider]] = {
    Brand.Provider.OFFLINE: lambda brand: OfflineProvider(),
    Brand.Provider.OPENAI: lambda brand: OpenAICompatibleProvider(OpenAIConfig.for_brand(brand)),
}


def provider_for(brand: Brand) -> Provider:
    """The brand's provider; an unknown name falls back to the offline one."""
    factory = PROVIDERS.get(brand.llm_provider, PROVIDERS[Brand.Provider.OFFLINE])
    return factory(brand)

"""Proposals for streamed answers, measured by `python -m bench --only stream --env BENCH_STREAM_FAST=1`.

Nothing here is used outside the benchmark; docs/performance.md records what each is worth.
"""

from __future__ import annotations

import functools
from typing import Any

from django.apps import AppConfig


class StreamFastPathConfig(AppConfig):
    """1. The brand chat consumer delivers `conversation.events` without channels' per-message
    `aclose_old_connections()`: that is a sync_to_async hop onto daphne's one DB thread for every
    chunk, so chunks queue behind the handshakes' and messages' database work. The handler touches
    no database (a gap re-read goes to Redis).
    2. httpx builds a new SSL context (loading the CA bundle, ~10 ms of CPU) for every answer's
    AsyncClient even for a plain-HTTP model; build it once per process."""

    name = "bench.experiments"
    label = "bench_stream_experiments"

    def ready(self) -> None:
        import httpx._transports.default as transports

        from conversations.protocols.brand_chat import BrandChatConsumer

        original_dispatch = BrandChatConsumer.dispatch

        async def dispatch(self: BrandChatConsumer, message: dict[str, Any]) -> None:
            if message.get("type") == "conversation.events":
                await self.conversation_events(message)
                return
            await original_dispatch(self, message)

        BrandChatConsumer.dispatch = dispatch  # type: ignore[method-assign]

        cached = functools.lru_cache(maxsize=8)(transports.create_ssl_context)
        transports.create_ssl_context = lambda verify=True, cert=None, trust_env=True: cached(  # type: ignore[assignment]
            verify=verify, cert=cert, trust_env=trust_env
        )

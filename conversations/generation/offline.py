"""The built-in offline provider: answers from the brand's catalog without any model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from conversations.generation.base import GenerationRequest


class OfflineProvider:
    name = "offline"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        for piece in _words(compose_answer(request)):
            yield piece
            await asyncio.sleep(0)


def compose_answer(request: GenerationRequest) -> str:
    available = [s.product for s in request.products if s.product.get("availability")]
    if request.language == "id":
        if not available:
            return f"Maaf, saya belum menemukan produk {request.brand_name} yang cocok. Bisa ceritakan kebutuhan Anda?"
        names = ", ".join(p["name"] for p in available)
        return f"Saya merekomendasikan {names}."
    if not available:
        return f"Sorry, I could not find a {request.brand_name} product that matches. Could you tell me more?"
    names = ", ".join(p["name"] for p in available)
    return f"I'd recommend {names}."


def _words(text: str) -> list[str]:
    """Split into word-sized pieces that join back to exactly `text`."""
    pieces, current = [], ""
    for char in text:
        if char == " " and current:
            pieces.append(current)
            current = ""
        current += char
    if current:
        pieces.append(current)
    return pieces

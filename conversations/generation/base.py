"""The small interface every answer provider implements, and what it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ScoredProduct:
    """A catalog product (the seed's wire object) and how well it matches, in [0, 1]."""

    product: dict[str, Any]
    score: float


@dataclass(frozen=True)
class GenerationRequest:
    brand_name: str
    user_text: str
    history: tuple[ChatTurn, ...] = ()
    language: str = "en"  # "en" | "id"
    voice: bool = False  # one sentence, for text-to-speech
    products: tuple[ScoredProduct, ...] = ()
    system_prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider failed or timed out; the message is safe to log, not meant for visitors."""


class Provider(Protocol):
    name: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the answer's text in pieces as they are produced."""
        ...


def split_words(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly `text` (spaces lead the next piece)."""
    pieces: list[str] = []
    current = ""
    for char in text:
        if char == " " and current.strip():
            pieces.append(current)
            current = ""
        current += char
    if current:
        pieces.append(current)
    return pieces

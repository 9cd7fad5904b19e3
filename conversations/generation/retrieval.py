"""Retrieval: the brand's products most relevant to what the visitor asked."""

from __future__ import annotations

import re

from conversations.generation.base import ScoredProduct
from flows.models import Product

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


def retrieve(brand_id: int, text: str, limit: int = 3) -> list[ScoredProduct]:
    """Products whose text shares words with `text`, best first, score in [0, 1]."""
    query = _tokens(text)
    if not query:
        return []
    scored = []
    for product in Product.objects.filter(brand_id=brand_id):
        words = _tokens(" ".join([product.name, product.category, product.description, " ".join(product.features)]))
        overlap = len(query & words)
        if overlap:
            scored.append(ScoredProduct(product.as_wire(), min(1.0, overlap / len(query))))
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored[:limit]

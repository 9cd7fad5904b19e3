"""Demo data beyond the brand and its flow: the catalog and agents (filled in as they land)."""

from __future__ import annotations

from flows.models import Brand


def load(brand: Brand) -> None:
    """Idempotent: creates only what is missing."""

"""The demo Socket.IO agents (the seed's emoji agent)."""

from __future__ import annotations

from flows.models import Brand


def load(brand: Brand) -> None:
    """Idempotent: creates only the agents that are missing."""

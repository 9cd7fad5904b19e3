"""Demo data beyond the brand and its flow."""

from __future__ import annotations

from flows.demo import agents, catalog
from flows.models import Brand


def load(brand: Brand) -> None:
    """Idempotent: creates only what is missing."""
    catalog.load(brand)
    agents.load(brand)

"""The demo TechPro catalog."""

from __future__ import annotations

from flows.models import Brand


def load(brand: Brand) -> None:
    """Idempotent: creates only the products that are missing."""

"""Reads of authored data, cached where the data is immutable."""

from __future__ import annotations

from functools import lru_cache

from flows.engine import Flow
from flows.models import Brand, FlowVersion


def active_brand(slug: str) -> Brand | None:
    return Brand.objects.filter(slug=slug, is_active=True).first()


@lru_cache(maxsize=256)
def flow_for_version(version_id: int) -> Flow:
    """Versions never change once published, so a parsed flow can live for the process."""
    return Flow(FlowVersion.objects.get(pk=version_id).definition)

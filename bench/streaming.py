"""Streamed answers under load (filled in once the generation pipeline has landed)."""

from __future__ import annotations

from typing import Any


def run_streaming(stacks: Any, args: Any) -> list[dict[str, Any]]:
    return [{"m": m, "available": False, "reason": "generation pipeline not there yet"} for m in args.stream.split(",")]

"""Hostile input for protocol parsers: arbitrary JSON, non-JSON, wrong types, huge and empty
values, and unicode edge cases (lone surrogates, NUL, right-to-left marks, emoji, combining)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

EDGE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone high surrogate: not encodable as UTF-8
    "\udfff",
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # RTL mark + Hebrew
    "\ufeff",  # byte order mark
    "👩‍👩‍👧‍👦",  # a ZWJ emoji sequence
    "e\u0301" * 50,  # combining accents
    "\U0010ffff",
    "\n\r\t",
    "null",
    "{}",
    "x" * 20_000,  # beyond every message limit and the frame limit
    "💥" * 5_000,
]

# Text that includes surrogates and control characters (Hypothesis' default text() excludes
# surrogates).
any_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.text(max_size=300),
    st.sampled_from(EDGE_STRINGS),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(any_text, children, max_size=5),
    ),
    max_leaves=20,
)


def objects_with(keys: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that look almost right: the protocol's keys, each missing or holding anything,
    plus stray keys."""
    fields = {key: st.one_of(st.just(good), json_values) for key, good in keys.items()}
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda base: st.dictionaries(any_text, json_values, max_size=3).map(lambda extra: {**extra, **base})
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def deep_nesting() -> st.SearchStrategy[str]:
    return st.integers(min_value=50, max_value=200_000).map(lambda depth: "[" * depth + "]" * depth)


def _dumps_ascii(value: Any) -> str:
    # \uXXXX escapes: the only way a lone surrogate reaches a server inside valid UTF-8.
    return json.dumps(value, ensure_ascii=True)


def frames(shaped: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str | bytes | None]:
    """What a WebSocket client can send: JSON text of anything, broken JSON, binary frames."""
    return st.one_of(
        json_values.map(_dumps),
        shaped.map(_dumps),
        shaped.map(_dumps_ascii),
        json_values.map(_dumps_ascii),
        any_text,
        st.binary(max_size=200),
        st.text(max_size=100).map(lambda t: t.encode("utf-8")),
        shaped.map(lambda value: _dumps(value).encode("utf-8", "surrogatepass")),
        deep_nesting(),
        st.just(None),
    )

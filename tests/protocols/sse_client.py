"""A small Server-Sent Events reader over httpx, parsing the stream as a browser's EventSource does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


def parse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield SSEEvent(name, "\n".join(data))
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]  # the spec strips exactly one space
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def read_stream(url: str, timeout: float = 30.0, until: tuple[str, ...] = ("commit_done", "error")) -> list[SSEEvent]:
    """Open the stream and read events up to the first of `until`."""
    events: list[SSEEvent] = []
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        for event in parse(response.iter_lines()):
            events.append(event)
            if event.event in until:
                break
    return events


def answer_text(events: list[SSEEvent]) -> str:
    return "".join(event.data for event in events if event.event == "token")

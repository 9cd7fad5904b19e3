"""Event loops on uvloop (libuv in C) instead of asyncio's pure-Python selector loop.

daphne's loop and the worker's background loops (streamed answers, publishing) spend much of
their time in the loop itself under load, where uvloop is several times cheaper per callback.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


def install_policy() -> None:
    """Make loops created from now on uvloop's (daphne creates its own when it is imported)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


T = TypeVar("T")


class LoopLocal(Generic[T]):
    """One `T` per event loop, made on first use from that loop (tests open and close loops;
    daphne and the worker's streaming thread each run one). Forgotten with its loop."""

    def __init__(self, make: Callable[[], T]) -> None:
        self.make = make
        self.values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self.values.get(loop)
        if value is None:
            value = self.values[loop] = self.make()
        return value

    def clear(self) -> None:
        self.values.clear()

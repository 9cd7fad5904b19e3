"""Event loops on uvloop (libuv in C) instead of asyncio's pure-Python selector loop.

daphne's loop and the worker's background loops (streamed answers, publishing) spend much of
their time in the loop itself under load, where uvloop is several times cheaper per callback.
"""

from __future__ import annotations

import asyncio

import uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


def install_policy() -> None:
    """Make loops created from now on uvloop's (daphne creates its own when it is imported)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

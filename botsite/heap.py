"""Short full garbage collections in the processes that must answer within milliseconds.

A full collection walks every tracked object that is not frozen and stops its process while it
does (about a microsecond an object on the 2-core machine): in daphne with a hundred streams
open, 18-31 ms in which no chunk moves. Objects that live as long as the process are moved out
of its sight with `gc.freeze()`: once when the process has started, and once more the first time
it is idle after serving, for what the first requests imported and cached on first use (in
daphne ~24,000 objects: 255 modules, psycopg's and redis' among them, three quarters of its old
generation with a hundred streams open). Only when idle, so that no connection's objects are
frozen: a frozen cycle is never collected, and one per open connection would be a leak.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Collect what is garbage now, then freeze everything that is left."""
    gc.collect()
    gc.freeze()


class FreezeWhenIdle:
    """Calls `freeze()` the first time it is told the process is idle after having been busy."""

    __slots__ = ("busy_before", "done")

    def __init__(self) -> None:
        self.busy_before = False
        self.done = False

    def observe(self, idle: bool) -> None:
        if self.done:
            return
        if not idle:
            self.busy_before = True
        elif self.busy_before:
            self.done = True
            freeze()

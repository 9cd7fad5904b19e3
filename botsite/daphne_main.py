"""`python -m botsite.daphne_main ARGS`: daphne's command line on uvloop, its startup heap frozen.

daphne runs Twisted's asyncio reactor on the event loop it creates at import; with uvloop's
policy in place first, that loop is uvloop's (libuv in C) instead of asyncio's pure-Python
selector loop, which was a tenth of daphne's CPU per flow step (docs/performance.md).

Once the reactor runs (the application is loaded by then, and no connection is open yet), the
objects of the startup — Django, the apps, the URL routes: ~123,000 — are moved out of the
garbage collector's sight (`gc.freeze`), as the Celery pool processes do: they live as long as
the process, and every full collection, which connection churn brings every few seconds, would
walk them again. Frozen later, after the first connections, the pause was halved in a probe
(73-95 -> 43-48 ms); at the reactor's start the difference is within the benchmark's noise, and
freezing later would also freeze whatever connections are open then, for good. What the first
requests import and cache is frozen the first time daphne is idle after them (`botsite.heap`).

Twisted's TCP connections send what they are given at once when nothing is waiting to be sent
(`twisted_writes`), instead of on the reactor's next round.
"""

from __future__ import annotations

from typing import Any

from botsite import heap, twisted_writes
from botsite.eventloop import install_policy


def _freeze_when_first_idle() -> None:
    """Freeze once more the first time daphne has no connection left after serving
    (`botsite.heap`): its once-a-second sweep over the connections looks."""
    from daphne.server import Server

    sweep = Server.application_checker
    warm = heap.FreezeWhenIdle()

    def application_checker(self: Any) -> None:
        sweep(self)
        warm.observe(idle=not self.connections)

    Server.application_checker = application_checker


def prepare() -> None:
    """Everything above, done before daphne's command line runs (tests/test_daphne_main.py)."""
    install_policy()
    import daphne.server  # noqa: F401  (creates the loop and installs Twisted's reactor on it)
    from twisted.internet import reactor

    twisted_writes.install()
    _freeze_when_first_idle()
    reactor.callWhenRunning(heap.freeze)


def main() -> None:
    prepare()
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

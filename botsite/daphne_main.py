"""`python -m botsite.daphne_main ARGS`: daphne's command line on uvloop.

daphne runs Twisted's asyncio reactor on the event loop it creates at import; with uvloop's
policy in place first, that loop is uvloop's (libuv in C) instead of asyncio's pure-Python
selector loop, which was a tenth of daphne's CPU per flow step (docs/performance.md).
"""

from __future__ import annotations

from botsite.eventloop import install_policy


def main() -> None:
    install_policy()
    from daphne.cli import CommandLineInterface  # imports daphne.server, which creates the loop

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

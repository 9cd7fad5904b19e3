"""botsite.daphne_main: what daphne runs with (uvloop, direct writes, the frozen startup heap) is
really in place once `prepare()` has run. In a child interpreter: it patches Twisted and daphne
and installs the reactor for the whole process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = """
import gc, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")
from botsite import daphne_main
daphne_main.prepare()

import uvloop
from daphne.server import Server
from twisted.internet import reactor, tcp

assert isinstance(reactor._asyncioEventloop, uvloop.Loop), type(reactor._asyncioEventloop)
assert getattr(tcp.Connection, "_botsite_direct_write", False), "Twisted's write is not patched"
assert Server.application_checker.__module__ == "botsite.daphne_main", "daphne's sweep is not wrapped"
assert gc.get_freeze_count() == 0, "frozen before the reactor runs"
reactor.callLater(0, reactor.stop)
reactor.run()
assert gc.get_freeze_count() > 0, "the startup heap was not frozen once the reactor ran"
print("ok")
"""


def test_prepare_installs_the_loop_the_writes_and_the_freezes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")

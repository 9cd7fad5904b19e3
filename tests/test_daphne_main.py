"""botsite.daphne_main: what daphne runs with (uvloop, direct writes, the frozen startup heap, the
database threads started with their connections open) is really in place once `prepare()` has
run. In a child interpreter: it patches Twisted and daphne and installs the reactor for the
whole process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECK = """
import gc, os, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")
from botsite import daphne_main
daphne_main.prepare()
import django
django.setup()  # as daphne's command line does when it loads the application

import uvloop
from daphne.server import Server
from twisted.internet import reactor, tcp

assert isinstance(reactor._asyncioEventloop, uvloop.Loop), type(reactor._asyncioEventloop)
assert getattr(tcp.Connection, "_botsite_direct_write", False), "Twisted's write is not patched"
assert Server.application_checker.__module__ == "botsite.daphne_main", "daphne's sweep is not wrapped"
assert gc.get_freeze_count() == 0, "frozen before the reactor runs"

from django.db import connection

def on_every_database_thread():
    # As the first visitors' calls would run: on the loop's default executor, all at once.
    import asyncio
    loop = asyncio.get_event_loop()
    together = threading.Barrier(daphne_main.DATABASE_THREADS, timeout=10)
    def look():
        together.wait()
        return threading.current_thread().name, connection.connection is not None
    return asyncio.gather(*(loop.run_in_executor(None, look) for _ in range(daphne_main.DATABASE_THREADS)))

seen = []
def check_then_stop():
    from twisted.internet.defer import Deferred
    d = Deferred.fromFuture(on_every_database_thread())
    d.addBoth(lambda result: (seen.append(result), reactor.stop()))

started_before = threading.active_count()
reactor.callLater(0.5, check_then_stop)
reactor.run()
assert gc.get_freeze_count() > 0, "the startup heap was not frozen once the reactor ran"
(looks,) = seen
assert not isinstance(looks, Exception), looks
names = {name for name, _ in looks}
assert len(names) == daphne_main.DATABASE_THREADS and all(n.startswith("daphne-db") for n in names), names
assert all(open_ for _, open_ in looks), "a database thread had no connection open before its first call"
print("ok")
"""


def test_prepare_installs_the_loop_the_writes_the_freezes_and_the_database_threads(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        timeout=60, env={**os.environ, "BOTSITE_VAR_DIR": str(tmp_path), "DATABASE_URL": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")

"""The SQLite backend's writer lock (botsite/sqlite/base.py): held exactly while a connection
writes, handed on when the writer ends, dies with its process, never shared across fork."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from botsite.sqlite.base import Database, WriterLock
from flows.models import Brand

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")


def lock_path() -> str:
    connection.ensure_connection()
    assert connection.writer_lock is not None
    return connection.writer_lock.path


def is_free(path: str) -> bool:
    """Whether another open file could take the lock now (and then gives it back)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def eventually_free(path: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_free(path):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def other() -> Iterator[WriterLock]:
    """A second writer of the test database: another open file, as another process has."""
    lock = WriterLock(lock_path(), timeout=30)
    yield lock
    lock.close()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_holds_the_lock_until_it_commits_or_rolls_back() -> None:
    path = lock_path()
    assert is_free(path)
    with transaction.atomic():
        Brand.objects.create(slug="a", name="A")
        assert not is_free(path)
    assert is_free(path)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Brand.objects.create(slug="b", name="B")
        assert not is_free(path)
        1 / 0  # noqa: B018
    assert is_free(path)
    assert list(Brand.objects.values_list("slug", flat=True)) == ["a"]


@pytest.mark.django_db(transaction=True)
def test_reads_take_no_lock_and_a_write_in_autocommit_takes_it_for_itself(other: WriterLock) -> None:
    other.acquire()
    assert Brand.objects.count() == 0  # a read does not wait for a writer
    order: list[str] = []

    def write() -> None:
        Brand.objects.create(slug="c", name="C")
        order.append("written")
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.3)
    assert order == []  # it waits for the holder
    order.append("released")
    other.release()
    writer.join(10)
    assert order == ["released", "written"]
    assert is_free(lock_path())


@pytest.mark.django_db(transaction=True)
def test_a_writer_gives_up_after_the_timeout_and_the_lock_is_not_left_held(other: WriterLock) -> None:
    other.acquire()
    waiter = WriterLock(lock_path(), timeout=0.2)
    with pytest.raises(Database.OperationalError, match="database is locked"):
        waiter.acquire()
    assert not waiter.held
    other.release()
    # The helper that waited on its behalf takes the lock when it comes free and lets it go.
    assert eventually_free(lock_path())
    waiter.acquire()
    assert waiter.held and not is_free(lock_path())
    waiter.close()
    assert is_free(lock_path())


@pytest.mark.django_db(transaction=True)
def test_a_process_killed_while_writing_releases_the_lock() -> None:
    path = lock_path()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from botsite.sqlite.base import WriterLock\n"
         f"lock = WriterLock({path!r}, 30); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not is_free(path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert eventually_free(path)
    finally:
        holder.kill()


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_does_not_share_its_parents_lock(other: WriterLock) -> None:
    other.acquire()
    child = os.fork()
    if child == 0:  # the child: the inherited lock must not count as held, nor be released
        code = 1
        try:
            other.timeout = 0.2
            try:
                other.acquire()
            except Database.OperationalError:
                other.close()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert other.held and not is_free(lock_path())

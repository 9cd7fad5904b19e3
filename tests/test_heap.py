"""botsite.heap: freezing once more the first time a process is idle after serving."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from botsite.heap import FreezeWhenIdle


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's objects go back where they were


def test_idle_before_any_work_freezes_nothing() -> None:
    warm = FreezeWhenIdle()
    warm.observe(idle=True)
    warm.observe(idle=True)
    assert gc.get_freeze_count() == 0


def test_the_first_idle_moment_after_work_freezes_once() -> None:
    warm = FreezeWhenIdle()
    warm.observe(idle=False)
    assert gc.get_freeze_count() == 0  # busy: its connections' objects must stay collectable
    warm.observe(idle=True)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [[index] for index in range(1000)]  # new objects, tracked by the collector
    warm.observe(idle=False)
    warm.observe(idle=True)
    assert gc.get_freeze_count() == frozen  # once only: later objects stay collectable
    assert kept

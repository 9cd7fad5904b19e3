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


def collectable(obj: object) -> bool:
    """Whether the collector still walks `obj` (frozen objects are in none of its generations)."""
    return any(candidate is obj for candidate in gc.get_objects())


def test_the_first_idle_moment_after_work_freezes_once() -> None:
    warm = FreezeWhenIdle()
    early = [["made while busy"]]
    warm.observe(idle=False)
    assert gc.get_freeze_count() == 0  # busy: its connections' objects must stay collectable
    assert collectable(early)
    warm.observe(idle=True)
    assert gc.get_freeze_count() > 0
    assert not collectable(early)
    late = [["made after the freeze"]]
    warm.observe(idle=False)
    warm.observe(idle=True)
    # Once only: what comes later stays collectable. (The frozen count itself may fall, as frozen
    # objects still die by reference counting.)
    assert collectable(late)

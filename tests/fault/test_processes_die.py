"""kill -9 the processes a conversation runs through, restart them, and check that nothing was
lost or doubled: every message stored once, every visitor saw each bot message exactly once
(catching up with its cursor), every turn settled."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.fault.harness import Visitor, check_conversation, fault_stack, stranded_inputs, walk_all

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def finish(threads, visitors, timeout: float = 100.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    stuck = {v.name: stranded_inputs(v) for v in visitors if not v.done}
    assert not stuck, f"visitors that did not finish, with the inputs waiting in their inbox: {stuck}"
    for visitor in visitors:
        check_conversation(visitor)


def test_a_worker_killed_mid_step_again_and_again_loses_and_doubles_nothing(techpro):
    with fault_stack() as stack:
        # Thinking 0.6 s before each of the five answers, a walk spans both faults below.
        visitors = [Visitor(stack, f"w{i}", think=0.6) for i in range(6)]
        threads = walk_all(visitors)
        time.sleep(0.5)
        assert not any(v.done for v in visitors)
        # Kill the pool child (the process running the steps) every 150 ms for a while: the
        # parent starts a new one and the broker hands the unacknowledged task out again.
        kills = 0
        until = time.monotonic() + 2
        while time.monotonic() < until:
            for child in stack.live_pool_children():
                child.kill()
                kills += 1
            time.sleep(0.15)
        assert kills >= 1
        # Then the whole worker, main process included (its reserved tasks come back after the
        # visibility timeout), and a new one a moment later.
        assert not all(v.done for v in visitors)
        stack.kill_worker()
        time.sleep(1.0)
        stack.start_worker()
        finish(threads, visitors)


def test_daphne_killed_mid_flow_and_restarted_loses_and_doubles_nothing(techpro):
    with fault_stack() as stack:
        visitors = [Visitor(stack, f"d{i}") for i in range(6)]
        threads = walk_all(visitors)
        for _ in range(2):
            time.sleep(0.4)
            assert not any(v.done for v in visitors)
            stack.kill_daphne()
            time.sleep(0.3)
            stack.daphne.start()
        finish(threads, visitors)
        assert all(v.connections > 1 for v in visitors), "daphne died without the visitors noticing"


def test_redis_killed_while_conversations_are_open_loses_and_doubles_nothing(techpro):
    with fault_stack() as stack:
        visitors = [Visitor(stack, f"r{i}", give_up=40) for i in range(6)]
        threads = walk_all(visitors)
        time.sleep(0.5)
        assert not any(v.done for v in visitors)
        stack.redis.kill()
        time.sleep(1.0)
        stack.redis.start()
        finish(threads, visitors, timeout=45)
        assert psutil.pid_exists(stack.daphne.process.pid)

"""Shared fixtures: personas, the demo brand, a real Celery worker, a real channel layer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import ChannelError
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.test import TransactionTestCase
from hypothesis import settings as hypothesis_settings

from botsite.celery import app as celery_app
from flows.models import Brand
from flows.services import flow_import, parse_flow_file
from tests.live import Daphne
from tests.llm_server import LLMServer

# CI explores the same examples every run (HYPOTHESIS_PROFILE=ci): a red build must be
# reproducible. Locally, Hypothesis keeps exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

LANGUAGE_FLOW = Path(__file__).resolve().parents[1] / "flows" / "demo" / "language-flow.json"


@pytest.fixture
def techpro(db: None) -> Brand:
    """The demo brand with the seed's language flow, as `load_demo` makes it."""
    brand = Brand.objects.create(
        slug="techpro",
        name="TechPro Solutions",
        description="Laptops, monitors and accessories.",
        allowed_origins="http://localhost:*\nhttp://127.0.0.1:*",
    )
    flow_import(brand, parse_flow_file(LANGUAGE_FLOW.read_text()), name="Language flow")
    return brand


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """On PostgreSQL, end the sessions the worker's and the channel layer's threads still hold
    on the test database, so that it can be dropped at the end of the run."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session")
def celery_session_worker() -> Iterator[object]:
    """A real Celery worker (a thread of this process) consuming from the real broker."""
    celery_app.conf.task_always_eager = False
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        queues=worker_queues(),
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=10,
    ) as worker:
        _session_worker_running.set()
        yield worker
        _session_worker_running.clear()


@pytest.fixture
def worker(celery_session_worker: object, transactional_db: None) -> object:
    """Tests that need a worker see committed data only, hence the transactional database."""
    return celery_session_worker


# Once started, the session's worker outlives each test, and any transactional test may have
# set off a task (a step, a generation) that is still running when the database is emptied
# after it: on PostgreSQL that TRUNCATE and the task's reads deadlock. So every emptying of
# the database first waits for the worker to go idle and drops what is still queued.
_session_worker_running = threading.Event()
_empty_database = TransactionTestCase._fixture_teardown


def _empty_database_once_the_worker_is_idle(self: TransactionTestCase) -> None:
    if _session_worker_running.is_set():
        wait_until_worker_idle()
    _empty_database(self)


TransactionTestCase._fixture_teardown = _empty_database_once_the_worker_is_idle  # type: ignore[method-assign]


def worker_queues() -> list[str]:
    """Flow steps' queue and streamed answers' (make run serves them from two workers)."""
    return [celery_app.conf.task_default_queue, django_settings.GENERATION_QUEUE]


def wait_until_worker_idle(timeout: float = 15.0) -> None:
    from celery.worker import state

    deadline = time.monotonic() + timeout
    idle_rounds = 0
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        while idle_rounds < 3 and time.monotonic() < deadline:
            queued = sum(queued_messages(channel, queue) for queue in worker_queues())
            busy = bool(state.active_requests or state.reserved_requests or queued)
            idle_rounds = 0 if busy else idle_rounds + 1
            time.sleep(0.02)
        for queue in worker_queues():
            channel.queue_purge(queue)


def queued_messages(channel: Any, queue: str) -> int:
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:  # the broker keeps no empty queue
        return 0


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A loopback OpenAI-compatible streaming server (tests/llm_server.py); `.url` is its base URL."""
    with LLMServer() as server:
        yield server


@pytest.fixture
def model_brand(techpro: Brand, llm_server: LLMServer) -> Brand:
    """The demo brand answering through the loopback model server."""
    techpro.llm_provider = "openai"
    techpro.llm_base_url = llm_server.url
    techpro.llm_model = "loopback-1"
    techpro.save()
    return techpro


@pytest.fixture
def daphne(worker: object) -> Iterator[Daphne]:
    """A real daphne serving botsite.asgi on a free loopback port (`.url`, `.ws_url`)."""
    with Daphne() as server:
        yield server


@pytest.fixture(autouse=True)
def isolated_redis_state() -> Iterator[None]:
    """Each test gets its own channel-layer instance: an instance keeps asyncio locks bound to the
    event loop of the test that first used it, and every async test runs in a new loop."""
    from channels.layers import channel_layers
    from django.core.cache import cache

    from conversations.protocols import assistant

    channel_layers.backends.clear()
    cache.clear()  # rate-limit counters must not leak from one test into the next
    assistant._brands.clear()  # brands are cached per process for a few seconds
    yield
    channel_layers.backends.clear()

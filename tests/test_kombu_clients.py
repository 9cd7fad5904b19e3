"""kombu's Redis channels share one client per connection pool (botsite/kombu_clients.py)."""

from __future__ import annotations

from kombu import Connection
from kombu.transport import redis as kombu_redis

from botsite.celery import app


def test_a_channel_keeps_one_client_per_pool_and_tasks_still_travel():
    assert getattr(kombu_redis.Channel._create_client, "shares_clients", False)
    with Connection(app.conf.broker_url) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.connection_pool is channel.pool
        # A new pool (what a fork or a reconnect leaves) gets a client of its own.
        channel._disconnect_pools()
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        # Messages still go out and come back through the shared client.
        queue = connection.SimpleQueue("botsite-test-shared-client")
        try:
            queue.put({"n": 1})
            queue.put({"n": 2})
            assert [queue.get(timeout=5).payload["n"] for _ in range(2)] == [1, 2]
        finally:
            queue.queue.delete()
            queue.close()

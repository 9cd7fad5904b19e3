"""Remote AI agents over Socket.IO, with python-socketio's own AsyncClient against two real daphne
processes (sharing this run's Redis and SQLite file) and the real Celery worker.

Proving that nothing else arrived: a `request` acknowledgement comes after the server has
published its emits to Redis; the test then publishes a `marker` to the socket through the same
Redis channel, so everything the server sent for that request is delivered before the marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import socketio
from asgiref.sync import sync_to_async

from conversations.agents import emit
from conversations.agents.tasks import send_agent_summaries
from conversations.models import Channel, Conversation, Message
from flows.demo import agents as demo_agents
from flows.models import Agent, Brand
from tests.live import Daphne

RATE_LIMIT = 12  # requests per minute per socket, for the daphne processes of these tests
WAIT = 20.0  # a guard against hanging, never an assertion about speed


@pytest.fixture(scope="module")
def servers(django_db_setup: None) -> Iterator[list[Daphne]]:
    """Two daphne processes, as behind a load balancer: rooms must work across them."""
    env = {"AGENT_REQUESTS_PER_MINUTE": str(RATE_LIMIT)}
    first, second = Daphne(env), Daphne(env)
    with first, second:
        yield [first, second]


@pytest.fixture
def emoji_agent(techpro: Brand) -> Agent:
    demo_agents.load(techpro)
    return Agent.objects.get(name="Emoji Analysis")


class Client:
    """A DCSS-like client: python-socketio's AsyncClient, websocket transport only."""

    def __init__(self, url: str, auth: dict[str, Any] | None) -> None:
        self.url, self.auth = url, auth
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in ("response", "interjection", "error", "marker", "connect_error"):
            self.sio.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(data: Any = None) -> None:
            await self.events.put((name, data))

        return record

    async def connect(self) -> Client:
        await self.sio.connect(self.url, auth=self.auth, transports=["websocket"], wait_timeout=WAIT)
        return self

    async def next(self) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), WAIT)

    async def request(self, payload: Any) -> Any:
        """Send a request and wait for its acknowledgement."""
        return await self.sio.call("request", payload, timeout=WAIT)

    async def rest(self) -> list[tuple[str, Any]]:
        """Every event still on its way to this socket: published before a marker sent now."""
        writer = socketio.AsyncRedisManager(emit.redis_url(), channel=emit.CHANNEL, write_only=True)
        await writer.emit("marker", {}, room=self.sio.get_sid("/"), namespace="/")
        received = []
        while (event := await self.next())[0] != "marker":
            received.append(event)
        return received

    async def close(self) -> None:
        await self.sio.disconnect()


def auth(user_id: Any, name: str = "Alice", chat_id: Any = 1, agent: str = "Emoji Analysis", **config: Any) -> dict:
    return {
        "agent": {"id": 7, "name": agent, "configuration": config},
        "user": {"id": user_id, "name": name},
        "chat": {"id": chat_id},
        "token": "t",
    }


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        if client.sio.connected:
            await client.close()


async def connect(clients: list[Client], server: Daphne, auth: dict[str, Any] | None) -> Client:
    client = await Client(server.url, auth).connect()
    clients.append(client)
    return client


def transcript(user_id: str) -> list[tuple[str, dict[str, Any]]]:
    conversation = Conversation.objects.get(channel=Channel.AGENT, user_id=user_id)
    return [(m.kind, m.payload) for m in Message.objects.filter(conversation=conversation).order_by("seq")]


@pytest.mark.django_db(transaction=True)
async def test_the_seed_emoji_agent_runs_end_to_end(emoji_agent, worker, servers, clients):
    alice = await connect(clients, servers[0], auth(101, "Alice"))
    assert await alice.next() == ("interjection", {"message": "Hello Alice, I will analyze all of your messages"})

    assert (await alice.request({"key": "userInput", "value": "great 👍", "annotations": []}))["status"] == "ok"
    assert await alice.next() == (
        "response",
        {"key": "userInput", "value": "great 👍", "annotations": [], "result": True},
    )
    await alice.request({"key": "userInput", "value": "no emoji here", "annotations": []})
    assert await alice.next() == (
        "response",
        {"key": "userInput", "value": "no emoji here", "annotations": [], "result": False},
    )
    await alice.request({"key": "userInput", "value": "flags 🇫🇷 and hearts ❤️", "annotations": []})
    assert (await alice.next())[1]["result"] is True

    # The beat task, run by the real worker, emits to Alice's room through Redis.
    send_agent_summaries.delay()
    assert await alice.next() == ("interjection", {"message": "You've used emojis in 2 messages!"})
    # The count has not changed since: a second run sends nothing.
    assert await sync_to_async(send_agent_summaries)() == 0

    await alice.sio.emit("end", {"agent": {"id": 7, "name": "Emoji Analysis"}, "user": {"id": 101}})
    assert await alice.next() == ("interjection", {"message": "Goodbye!"})
    assert (await alice.request({"key": "userInput", "value": "after 👍", "annotations": []}))["status"] == "ignored"
    assert await alice.rest() == []

    stored = await sync_to_async(transcript)("101")
    assert [kind for kind, _ in stored] == [
        "interjection",
        "request",
        "response",
        "request",
        "response",
        "request",
        "response",
        "interjection",
        "interjection",
    ]
    assert stored[2][1]["result"] is True and stored[4][1]["result"] is False
    assert stored[-1][1] == {"message": "Goodbye!"}
    conversation = await Conversation.objects.aget(channel=Channel.AGENT, user_id="101")
    assert conversation.ended_at is not None and conversation.external_id == "1"
    assert conversation.brand_id == emoji_agent.brand_id


@pytest.mark.django_db(transaction=True)
async def test_two_users_never_see_each_other_s_messages(emoji_agent, worker, servers, clients):
    alice = await connect(clients, servers[0], auth(201, "Alice"))
    bob = await connect(clients, servers[1], auth("bob-202", "Bob"))
    assert (await alice.next())[1]["message"].startswith("Hello Alice")
    assert (await bob.next())[1]["message"].startswith("Hello Bob")

    await alice.request({"key": "a", "value": "alice 😀", "annotations": []})
    await bob.request({"key": "b", "value": "bob", "annotations": []})
    send_agent_summaries.delay()
    assert await alice.next() == ("response", {"key": "a", "value": "alice 😀", "annotations": [], "result": True})
    assert await alice.next() == ("interjection", {"message": "You've used emojis in 1 messages!"})
    assert await bob.next() == ("response", {"key": "b", "value": "bob", "annotations": [], "result": False})
    assert await alice.rest() == []
    assert await bob.rest() == []


@pytest.mark.django_db(transaction=True)
async def test_a_user_connected_to_two_servers_gets_every_response_on_both(emoji_agent, worker, servers, clients):
    first = await connect(clients, servers[0], auth(301))
    assert (await first.next())[0] == "interjection"
    second = await connect(clients, servers[1], auth(301))  # the same engagement: no second welcome

    await second.request({"key": "k", "value": "🎉", "annotations": []})
    assert await first.next() == ("response", {"key": "k", "value": "🎉", "annotations": [], "result": True})
    assert await second.next() == ("response", {"key": "k", "value": "🎉", "annotations": [], "result": True})
    assert await first.rest() == []
    assert await second.rest() == []
    assert await Conversation.objects.filter(channel=Channel.AGENT, user_id="301").acount() == 1


@pytest.mark.django_db(transaction=True)
async def test_reconnecting_keeps_the_engagement_and_welcomes_only_once(emoji_agent, worker, servers, clients):
    first = await connect(clients, servers[0], auth(401))
    assert (await first.next())[0] == "interjection"
    await first.request({"key": "k", "value": "🙂", "annotations": []})
    assert (await first.next())[0] == "response"
    await first.close()

    again = await connect(clients, servers[1], auth(401.0))  # a number may come back as a float
    await again.request({"key": "k", "value": "plain", "annotations": []})
    assert await again.next() == ("response", {"key": "k", "value": "plain", "annotations": [], "result": False})
    assert await again.rest() == []
    kinds = [kind for kind, _ in await sync_to_async(transcript)("401")]
    assert kinds == ["interjection", "request", "response", "request", "response"]


@pytest.mark.django_db(transaction=True)
async def test_a_connection_without_an_agent_is_ignored(emoji_agent, worker, servers, clients):
    stranger = await connect(clients, servers[0], {"user": {"id": 501, "name": "Eve"}})
    assert stranger.sio.connected
    assert (await stranger.request({"key": "k", "value": "👍", "annotations": []}))["status"] == "ignored"
    assert await stranger.rest() == []
    assert not await Conversation.objects.filter(channel=Channel.AGENT).aexists()


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_agent_is_refused_with_a_connect_error(emoji_agent, worker, servers, clients):
    client = Client(servers[0].url, auth(601, agent="No Such Agent"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    name, refusal = await client.next()
    assert name == "connect_error" and "No Such Agent" in refusal["message"]
    assert refusal["data"] == {"code": "unknown_agent"}
    assert not await Conversation.objects.filter(channel=Channel.AGENT).aexists()


@pytest.mark.django_db(transaction=True)
async def test_bad_requests_get_an_error_and_the_connection_stays(emoji_agent, worker, servers, clients):
    alice = await connect(clients, servers[0], auth(701))
    assert (await alice.next())[0] == "interjection"

    cases = [
        ({"value": "x", "annotations": []}, "bad_request", None),
        ({"key": "k", "annotations": []}, "bad_request", "k"),
        ({"key": "k", "value": 5, "annotations": []}, "bad_request", "k"),
        ({"key": ["k"], "value": "x"}, "bad_request", None),
        ({"key": "k", "value": "x", "annotations": "none"}, "bad_request", "k"),
        ("just a string", "bad_request", None),
        ({"key": "k", "value": "👍" * 10_001, "annotations": []}, "too_long", "k"),
    ]
    for payload, code, key in cases:
        assert (await alice.request(payload))["status"] == "error"
        name, error = await alice.next()
        assert name == "error" and error["code"] == code and error["event"] == "request"
        assert error.get("key") == key and error["message"]
    assert alice.sio.connected

    await alice.request({"key": "k", "value": "still here 👍", "annotations": []})
    assert (await alice.next())[1]["result"] is True
    kinds = [kind for kind, _ in await sync_to_async(transcript)("701")]
    assert kinds == ["interjection", "request", "response"]


@pytest.mark.django_db(transaction=True)
async def test_a_flood_is_rate_limited_and_the_connection_stays(emoji_agent, worker, servers, clients):
    alice = await connect(clients, servers[0], auth(801))
    assert (await alice.next())[0] == "interjection"
    statuses = [
        (await alice.request({"key": "k", "value": f"{n}", "annotations": []}))["status"] for n in range(RATE_LIMIT + 3)
    ]
    assert statuses == ["ok"] * RATE_LIMIT + ["error"] * 3
    events = await alice.rest()
    assert [name for name, _ in events] == ["response"] * RATE_LIMIT + ["error"] * 3
    assert {data["code"] for name, data in events if name == "error"} == {"rate_limited"}
    assert alice.sio.connected
    assert len(await sync_to_async(transcript)("801")) == 1 + 2 * RATE_LIMIT


@pytest.mark.django_db(transaction=True)
async def test_a_keyword_agent_takes_documented_overrides_from_auth(techpro, worker, servers, clients):
    await Agent.objects.acreate(
        name="Greeting",
        kind=Agent.Kind.KEYWORD,
        brand=techpro,
        configuration={"keywords": ["hello"]},
        welcome_message="",
    )
    plain = await connect(clients, servers[0], auth(901, agent="Greeting"))
    custom = await connect(clients, servers[1], auth(902, agent="Greeting", keywords=["bonjour"], unrelated=1))
    await plain.request({"key": "k", "value": "Hello there", "annotations": []})
    await custom.request({"key": "k", "value": "Hello there", "annotations": []})
    await custom.request({"key": "k", "value": "Bonjour!", "annotations": []})
    assert (await plain.next())[1]["result"] is True
    assert (await custom.next())[1]["result"] is False
    assert (await custom.next())[1]["result"] is True
    assert await plain.rest() == [] and await custom.rest() == []


@pytest.mark.django_db(transaction=True)
async def test_a_bad_override_is_reported_and_the_agent_s_own_configuration_is_used(
    emoji_agent, worker, servers, clients
):
    alice = await connect(clients, servers[0], auth(1001, pattern="(unclosed"))
    events = [await alice.next(), await alice.next()]
    assert ("interjection", {"message": "Hello Alice, I will analyze all of your messages"}) in events
    (error,) = [data for name, data in events if name == "error"]
    assert error["code"] == "bad_configuration" and error["event"] == "connect"
    await alice.request({"key": "k", "value": "😀", "annotations": []})
    assert (await alice.next())[1]["result"] is True


@pytest.mark.django_db(transaction=True)
async def test_a_browser_origin_must_be_allowed(emoji_agent, worker, servers, clients):
    listed = socketio.AsyncClient(reconnection=False)
    await listed.connect(
        servers[0].url,
        auth=auth(1101),
        transports=["websocket"],
        headers={"Origin": "http://localhost:3000"},
        wait_timeout=WAIT,
    )
    await listed.disconnect()
    stranger = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger.connect(
            servers[0].url,
            auth=auth(1102),
            transports=["websocket"],
            headers={"Origin": "https://evil.example"},
            wait_timeout=WAIT,
        )
    assert await Conversation.objects.filter(channel=Channel.AGENT, user_id="1102").acount() == 0

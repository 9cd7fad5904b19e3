"""The bot-assistant socket end to end: a real channel layer and a real Celery worker."""

import asyncio
import json

import pytest
import websockets
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message
from tests.protocols.assistant_client import AssistantClient
from tests.protocols.channel_layer import take_sockets_out_of_group

pytestmark = pytest.mark.django_db(transaction=True)

LANG = {"kind": "ChoiceResponse", "groupId": "lang"}


async def start(path: str = "/ws/assistant/techpro/", **kwargs) -> AssistantClient:
    """A connected visitor that has received the greeting and the language choice."""
    client = AssistantClient(path, **kwargs)
    await client.connect()
    await client.receive_until("ChoiceRequest")
    return client


@database_sync_to_async
def stored(sid_conversation_count: bool = False) -> list[tuple[int, str, str]]:
    return [
        (m.seq, m.direction, m.kind) for m in Message.objects.filter(seq__isnull=False).order_by("conversation", "seq")
    ]


@database_sync_to_async
def counts() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


async def test_a_visitor_walks_the_whole_language_flow(techpro, worker):
    client = await start()
    await client.send({**LANG, "itemId": "other", "content": "Other"})
    start_chat = await client.receive()
    assert start_chat == {
        "kind": "StartChatSession",
        "sessionId": "langPreference",
        "chatPrompt": "Type your preferred language here...",
        "chatText": "I enabled chat editor",
        "seq": 4,
    }
    await client.send({"kind": "UserText", "sessionId": "langPreference", "content": "Zig"})
    assert await client.receive() == {"kind": "EndChatSession", "sessionId": "langPreference", "seq": 6}
    assert (await client.receive())["groupId"] == "others"
    await client.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "no", "content": "No"})
    assert await client.receive() == {"kind": "BotText", "content": "Great, thanks!", "seq": 9}
    assert await client.nothing_more()
    assert await stored() == [
        (1, "out", "BotText"),
        (2, "out", "ChoiceRequest"),
        (3, "in", "ChoiceResponse"),
        (4, "out", "StartChatSession"),
        (5, "in", "UserText"),
        (6, "out", "EndChatSession"),
        (7, "out", "ChoiceRequest"),
        (8, "in", "ChoiceResponse"),
        (9, "out", "BotText"),
    ]
    await client.close()


async def test_reconnecting_with_the_cookie_replays_the_conversation(techpro, worker):
    first = await start()
    await first.send({**LANG, "itemId": "go"})  # no content: the server fills it in
    await first.receive_until("ChoiceRequest")
    await first.close()

    again = AssistantClient(cookie=first.sid)
    await again.connect()
    assert again.sid == first.sid
    replay = [await again.receive() for _ in range(4)]
    assert [(m["seq"], m["kind"]) for m in replay] == [
        (1, "BotText"),
        (2, "ChoiceRequest"),
        (3, "ChoiceResponse"),
        (4, "ChoiceRequest"),
    ]
    assert replay[2]["content"] == "Go"
    assert await again.nothing_more()
    # The replayed conversation goes on where it was.
    await again.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "no"})
    assert (await again.receive())["content"] == "Great, thanks!"
    await again.close()


async def test_after_sends_only_what_the_client_has_not_seen(techpro, worker):
    first = await start()
    await first.send({**LANG, "itemId": "rust"})
    await first.receive_until("ChoiceRequest")
    await first.close()
    resumed = AssistantClient(f"/ws/assistant/techpro/?sid={first.sid}&after=2")
    await resumed.connect()
    assert [(await resumed.receive())["seq"] for _ in range(2)] == [3, 4]
    assert await resumed.nothing_more()
    await resumed.close()


async def test_a_forged_or_unknown_session_starts_a_new_conversation(techpro, worker):
    client = AssistantClient("/ws/assistant/techpro/?sid=" + "ab" * 20)
    await client.connect()
    assert client.sid != "ab" * 20
    assert (await client.receive())["seq"] == 1
    await client.close()
    weird = AssistantClient(cookie="not-even-hex")
    await weird.connect()
    assert weird.sid and weird.sid != "not-even-hex"
    await weird.close()


async def test_reset_session_starts_over_on_the_same_socket(techpro, worker):
    client = await start()
    await client.send({**LANG, "itemId": "rust"})
    await client.receive_until("ChoiceRequest")
    await client.send({"kind": "ResetSession"})
    assert (await client.receive()) == {"kind": "BotText", "content": "Hi, I'm Bot! Nice to meet you.", "seq": 1}
    assert (await client.receive())["seq"] == 2
    await client.close()
    # The sid names the visitor: a later handshake resumes the new conversation.
    later = AssistantClient(cookie=client.sid)
    await later.connect()
    assert [(await later.receive())["seq"] for _ in range(2)] == [1, 2]
    assert await later.nothing_more()
    await later.close()
    conversations = await database_sync_to_async(
        lambda: list(Conversation.objects.order_by("created_at").values_list("ended_at", "last_seq"))
    )()
    assert conversations[0][0] is not None and conversations[0][1] == 4  # kept for the transcripts
    assert conversations[1][0] is None


async def test_a_retry_with_the_same_client_id_is_applied_once(techpro, worker):
    client = await start()
    answer = {**LANG, "itemId": "go", "clientId": "c-1"}
    await client.send(answer)
    await client.send(answer)
    assert (await client.receive())["groupId"] == "others"
    assert await client.nothing_more(0.5)
    assert [k for _, d, k in await stored() if d == "in"] == ["ChoiceResponse"]
    await client.close()


async def test_two_answers_sent_at_once_are_applied_in_order_once_each(techpro, worker):
    client = await start()
    await client.send({**LANG, "itemId": "go"})
    await client.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes"})
    received = [await client.receive() for _ in range(2)]
    assert [(m["seq"], m["groupId"]) for m in received] == [(4, "others"), (6, "lang")]
    await client.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "invalid"),
        (json.dumps({"kind": "Hello"}), "unknown_kind"),
        (json.dumps({"content": "no kind"}), "unknown_kind"),
        (json.dumps({"kind": "BotText", "content": "I am the bot now"}), "unknown_kind"),
        (json.dumps({"kind": "ChoiceResponse", "groupId": 7, "itemId": "go"}), "invalid"),
        (json.dumps({"kind": "UserText", "sessionId": "langPreference", "content": "x" * 1001}), "too_long"),
        (json.dumps({"kind": "UserText", "sessionId": "langPreference", "content": "   "}), "invalid"),
        ("x" * 20000, "too_long"),
        (json.dumps({"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes"}), "unexpected_response"),
        (json.dumps({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "cobol"}), "unexpected_response"),
        (
            json.dumps({"kind": "UserText", "sessionId": "langPreference", "content": "too early"}),
            "unexpected_response",
        ),
    ],
)
async def test_bad_input_gets_an_error_changes_nothing_and_keeps_the_socket(techpro, worker, frame, code):
    client = await start()
    before = await counts()
    await client.send(frame)
    error = await client.receive()
    assert error["kind"] == "Error" and error["code"] == code and error["message"]
    assert await counts() == before
    # Still open and still where it was.
    await client.send({**LANG, "itemId": "go"})
    assert (await client.receive())["seq"] == 4
    await client.close()


async def test_an_error_for_one_tab_is_not_shown_in_another(techpro, worker):
    first = await start()
    second = AssistantClient(cookie=first.sid)
    await second.connect()
    await second.receive_until("ChoiceRequest")
    await first.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes"})
    assert (await first.receive())["code"] == "unexpected_response"
    assert await second.nothing_more(0.5)
    await first.close()
    await second.close()


async def test_a_flood_is_rate_limited_and_the_socket_stays(techpro, worker):
    client = await start()
    for _ in range(25):
        await client.send("{bad")
    codes = [(await client.receive())["code"] for _ in range(25)]
    assert codes.count("rate_limited") >= 5
    await client.close()


async def test_too_many_queued_answers_are_busy(techpro, worker, settings):
    settings.MAX_PENDING_INPUTS = 0
    client = await start()
    await client.send({**LANG, "itemId": "go"})
    assert (await client.receive())["code"] == "busy"
    await client.close()


async def test_an_unknown_brand_gets_not_found_and_a_close(techpro, worker):
    client = AssistantClient("/ws/assistant/nope/")
    await client.connect()
    assert client.first == {"kind": "Error", "code": "not_found", "message": "Brand not found or inactive"}
    output = await client.communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"


async def test_a_browser_from_an_unlisted_origin_is_refused(techpro, worker):
    client = AssistantClient(origin="https://evil.example")
    await client.connect()
    assert client.first["code"] == "forbidden_origin"
    allowed = AssistantClient(origin="http://localhost:3000")
    await allowed.connect()
    assert allowed.sid
    await allowed.close()


async def test_the_session_cookie_is_set_in_the_real_handshake(techpro, daphne):
    async with websockets.connect(f"{daphne.ws_url}/ws/assistant/techpro/") as ws:
        cookie = ws.response.headers["Set-Cookie"]
        session = json.loads(await ws.recv())
        assert cookie.startswith(f"Fluvio-Bot-Assistant={session['sid']};")
        assert "Path=/" in cookie and "SameSite=Lax" in cookie and "HttpOnly" not in cookie
        assert json.loads(await ws.recv())["kind"] == "BotText"
    headers = {"Cookie": f"Fluvio-Bot-Assistant={session['sid']}"}
    async with websockets.connect(f"{daphne.ws_url}/ws/assistant/techpro/", additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["sid"] == session["sid"]
        replay = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        assert [m["seq"] for m in replay] == [1, 2]


async def test_staff_edits_reach_the_next_visitor_not_the_current_one(techpro, worker):
    from flows.models import Flow
    from flows.services import flow_publish

    current = await start()

    def edit() -> None:
        flow = Flow.objects.get(brand=techpro, is_active=True)
        definition = flow.published_version.definition
        definition["done"]["sendRequest"]["content"] = "Thanks a lot!"
        flow_publish(flow, definition)

    await database_sync_to_async(edit)()
    await current.send({**LANG, "itemId": "go"})
    await current.receive()
    await current.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "no"})
    assert (await current.receive())["content"] == "Great, thanks!"
    nxt = await start()
    await nxt.send({**LANG, "itemId": "go"})
    await nxt.receive()
    await nxt.send({"kind": "ChoiceResponse", "groupId": "others", "itemId": "no"})
    assert (await nxt.receive())["content"] == "Thanks a lot!"
    await current.close()
    await nxt.close()


async def test_a_step_whose_live_events_were_lost_is_read_from_the_log(techpro, worker, monkeypatch):
    from conversations.protocols import assistant

    monkeypatch.setattr(assistant, "WATCH_SECONDS", 0.3)
    client = await start()
    conversation_id = await database_sync_to_async(lambda: Conversation.objects.get().pk)()
    await take_sockets_out_of_group(conversation_id)  # as if every live event of the step were lost
    await client.send({**LANG, "itemId": "go"})
    nxt = await client.receive()
    # The next request, from the log; the visitor's own answer is not echoed back.
    assert nxt["seq"] == 4 and nxt["groupId"] == "others"
    assert await client.nothing_more()
    await client.close()


async def test_text_with_a_nul_character_is_refused_on_every_database(techpro, worker):
    client = await start()
    before = await counts()
    await client.send({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go", "content": "G\u0000o"})
    assert (await client.receive())["code"] == "invalid"
    assert await counts() == before
    await client.close()


async def test_a_returning_visitor_restarts_work_whose_task_was_lost(techpro, worker):
    """The broker lost the task that starts the flow and the one that applies an answer (e.g. a
    Redis restart between commit and enqueue): the visitor coming back sets both going again."""
    from conversations import inbox, services
    from conversations.models import Channel
    from tests.live_worker import task_routed_to_private_queue

    sid = "ab" * 20

    @database_sync_to_async
    def open_with_lost_tasks():
        with task_routed_to_private_queue("conversations.tasks.advance_flows"):  # nobody consumes it
            conversation = services.conversation_open(
                techpro, Channel.ASSISTANT, visitor_key=services.visitor_key_for(sid)
            )
        return conversation

    conversation = await open_with_lost_tasks()
    client = AssistantClient(cookie=sid)
    await client.connect()
    assert client.sid == sid
    assert (await client.receive_until("ChoiceRequest"))[-1]["groupId"] == "lang"
    await client.close()

    @database_sync_to_async
    def answer_with_lost_task():
        with task_routed_to_private_queue("conversations.tasks.advance_flows"):
            item = inbox.PendingInput(conversation.pk, {**LANG, "itemId": "go"}, "lost-1", "")
            assert inbox.queue_inputs([item]) == [inbox.InputResult.QUEUED]

    await answer_with_lost_task()
    again = AssistantClient(cookie=sid)
    await again.connect()
    requests = [m for m in await again.receive_until("ChoiceRequest")]  # the replay: the greeting, lang
    requests += await again.receive_until("ChoiceRequest")  # the answer applied: the next question
    assert [m["groupId"] for m in requests if m["kind"] == "ChoiceRequest"] == ["lang", "others"]
    await again.close()

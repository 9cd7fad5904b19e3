"""The sessions API (HTTP + SSE) against the real stack: daphne, Redis, a Celery worker, and the
loopback OpenAI-compatible model server."""

from __future__ import annotations

import httpx
import pytest

from conversations.models import Conversation, Message
from tests.llm_server import Reply
from tests.protocols.sse_client import SSEEvent, answer_text, parse, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


def post(daphne, user_id: str, body: dict) -> httpx.Response:
    return httpx.post(f"{daphne.url}/sessions/{user_id}/messages", json=body, timeout=10)


def test_the_seed_walk_through_works_end_to_end(model_brand, llm_server, daphne):
    llm_server.set_tokens(["Hello", " there", "!"])
    first = post(daphne, "alice", {"user_id": "alice", "message": "Hello!"})
    assert first.status_code == 200
    session_id = first.json()["session_id"]
    assert first.json() == {
        "session_id": session_id,
        "status": "ok",
        "message": f"Message received. Connect to /sessions/{session_id}/stream for response.",
    }

    events = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert [e.event for e in events][-2:] == ["message_end", "commit_done"]
    assert events[-1].data == session_id
    assert answer_text(events) == "Hello there!"

    llm_server.set_tokens(["I'm", " fine", "."])
    follow_up = post(daphne, "alice", {"user_id": "alice", "message": "How are you?", "session_id": session_id})
    assert follow_up.status_code == 200 and follow_up.json()["session_id"] == session_id
    assert answer_text(read_stream(f"{daphne.url}/sessions/{session_id}/stream")) == "I'm fine."

    history = httpx.get(f"{daphne.url}/sessions/{session_id}").json()["session"]
    assert history["id"] == session_id and history["user_id"] == "alice" and history["state"] == "idle"
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "Hello!"),
        ("assistant", "Hello there!"),
        ("user", "How are you?"),
        ("assistant", "I'm fine."),
    ]
    assert history["messages"][0]["id"] == "msg-1" and history["messages"][0]["timestamp"].endswith("Z")
    # The model saw the history as chat turns.
    second_request = llm_server.requests[1].body["messages"]
    assert [m["role"] for m in second_request[1:]] == ["user", "assistant", "user"]


def test_the_stream_sends_tokens_as_the_model_produces_them(model_brand, llm_server, daphne):
    llm_server.queue(Reply(tokens=("One", " two", " three"), pause_after=2))
    session_id = post(daphne, "bob", {"user_id": "bob", "message": "count"}).json()["session_id"]
    received: list[SSEEvent] = []
    with httpx.stream("GET", f"{daphne.url}/sessions/{session_id}/stream", timeout=30) as response:
        events = parse(response.iter_lines())
        received += [next(events), next(events)]
        # The model is paused after two tokens, and both have already reached the visitor.
        assert [e.data for e in received] == ["One", " two"]
        assert Conversation.objects.get(pk=session_id).turn_state == "ai_generating"
        llm_server.release()
        for event in events:
            received.append(event)
            if event.event == "commit_done":
                break
    assert answer_text(received) == "One two three"
    stored = Message.objects.get(conversation_id=session_id, direction="out")
    assert stored.payload["content"] == "One two three" and stored.kind == "answer"


def test_a_stream_opened_late_still_delivers_the_whole_answer(model_brand, llm_server, daphne):
    llm_server.queue(Reply(tokens=("Late", " but", " whole"), pause_after=2))
    session_id = post(daphne, "carol", {"user_id": "carol", "message": "hi"}).json()["session_id"]
    assert llm_server.wait_for_tokens(2)
    # Mid-answer: the first two pieces were streamed before anyone listened.
    received: list[SSEEvent] = []
    with httpx.stream("GET", f"{daphne.url}/sessions/{session_id}/stream", timeout=30) as response:
        events = parse(response.iter_lines())
        received += [next(events), next(events)]
        assert received == [SSEEvent("token", "Late"), SSEEvent("token", " but")]
        llm_server.release()
        for event in events:
            received.append(event)
            if event.event == "commit_done":
                break
    assert answer_text(received) == "Late but whole"
    assert [e.event for e in received][-2:] == ["message_end", "commit_done"]
    # After the commit, a new stream delivers the last answer again and commits.
    again = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert answer_text(again) == "Late but whole" and again[-1] == SSEEvent("commit_done", session_id)


def test_a_token_with_a_newline_is_sent_over_several_data_lines(model_brand, llm_server, daphne):
    llm_server.queue(Reply(tokens=("Line one", "\nline two", " end"), pause_after=2))
    session_id = post(daphne, "dan", {"user_id": "dan", "message": "lines"}).json()["session_id"]
    raw = []
    with httpx.stream("GET", f"{daphne.url}/sessions/{session_id}/stream", timeout=30) as response:
        for line in response.iter_lines():
            raw.append(line)
            if line == "data: line two":
                llm_server.release()  # the model's own pieces arrived; let it finish
            if line.startswith("event: commit_done"):
                break
    assert raw[:7] == ["event: token", "data: Line one", "", "event: token", "data: ", "data: line two", ""]
    assert raw[7:9] == ["event: token", "data:  end"]
    assert answer_text(list(parse([*raw, "", ""]))) == "Line one\nline two end"


def test_a_message_while_the_answer_is_under_way_is_refused_with_409(model_brand, llm_server, daphne):
    llm_server.queue(Reply(pause_after=1))
    session_id = post(daphne, "erin", {"user_id": "erin", "message": "first"}).json()["session_id"]
    assert llm_server.wait_for_tokens(1)
    busy = post(daphne, "erin", {"user_id": "erin", "message": "second", "session_id": session_id})
    assert busy.status_code == 409 and "error" in busy.json()
    llm_server.release()
    events = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert events[-1].event == "commit_done"
    # As soon as commit_done has been sent, the next message is accepted.
    assert post(daphne, "erin", {"user_id": "erin", "message": "second", "session_id": session_id}).status_code == 200


def test_a_post_without_session_id_always_starts_a_new_session(techpro, daphne):
    one = post(daphne, "frank", {"user_id": "frank", "message": "a"}).json()["session_id"]
    two = post(daphne, "frank", {"user_id": "frank", "message": "b"}).json()["session_id"]
    assert one != two
    assert Conversation.objects.filter(user_id="frank", channel="sessions").count() == 2


def test_unknown_sessions_and_brands_are_404_json(techpro, daphne):
    missing = "00000000-0000-0000-0000-000000000000"
    for response in (
        httpx.get(f"{daphne.url}/sessions/{missing}"),
        httpx.get(f"{daphne.url}/sessions/not-a-uuid"),
        httpx.get(f"{daphne.url}/sessions/{missing}/stream"),
        post(daphne, "gina", {"user_id": "gina", "message": "x", "session_id": missing}),
        post(daphne, "gina", {"user_id": "gina", "message": "x", "brand_id": "nope"}),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/json")
        assert "error" in response.json()


def test_another_users_session_is_not_found(techpro, daphne):
    session_id = post(daphne, "hank", {"user_id": "hank", "message": "mine"}).json()["session_id"]
    read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert post(daphne, "ivy", {"user_id": "ivy", "message": "x", "session_id": session_id}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "jo"},
        {"user_id": "jo", "message": "   "},
        {"user_id": "jo", "message": 42},
        {"user_id": "someone-else", "message": "hi"},
        {"user_id": "jo", "message": "x" * 1001},
    ],
)
def test_bad_input_is_400_json(techpro, daphne, body):
    response = post(daphne, "jo", body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_invalid_json_is_400_json(techpro, daphne):
    response = httpx.post(
        f"{daphne.url}/sessions/jo/messages", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()


def test_the_offline_brand_answers_from_its_catalog_over_sse(techpro, daphne):
    session_id = post(daphne, "kim", {"user_id": "kim", "message": "Hello!", "brand_id": "techpro"}).json()[
        "session_id"
    ]
    events = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    stored = Message.objects.get(conversation_id=session_id, direction="out")
    assert answer_text(events) == stored.payload["content"] != ""
    assert stored.payload["kind"] == "answer" and stored.payload["language"] == "en"


def test_the_api_is_described_in_openapi(techpro, daphne):
    schema = httpx.get(f"{daphne.url}/openapi.json").json()
    assert "/sessions/{user_id}/messages" in schema["paths"]
    assert "/sessions/{session_id}" in schema["paths"]
    stream = schema["paths"]["/sessions/{session_id}/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert httpx.get(f"{daphne.url}/docs").status_code == 200
    assert httpx.get(f"{daphne.url}/redoc").status_code == 200


def test_a_failing_model_without_fallback_ends_the_stream_with_an_error_event(model_brand, llm_server, daphne):
    model_brand.fallback_to_offline = False
    model_brand.save()
    llm_server.queue(Reply(status=500))
    session_id = post(daphne, "lou", {"user_id": "lou", "message": "hi"}).json()["session_id"]
    events = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert events[-1].event == "error" and "could not answer" in events[-1].data
    state = httpx.get(f"{daphne.url}/sessions/{session_id}").json()["session"]["state"]
    assert state == "error"
    # The visitor may send the message again.
    assert post(daphne, "lou", {"user_id": "lou", "message": "hi", "session_id": session_id}).status_code == 200


def test_a_failing_model_with_fallback_still_answers_over_sse(model_brand, llm_server, daphne):
    llm_server.queue(Reply(status=502))
    session_id = post(daphne, "max", {"user_id": "max", "message": "laptop please"}).json()["session_id"]
    events = read_stream(f"{daphne.url}/sessions/{session_id}/stream")
    assert events[-1].event == "commit_done"
    stored = Message.objects.get(conversation_id=session_id, direction="out")
    assert answer_text(events) == stored.payload["content"] and stored.payload["fallback"] is True


def test_a_flood_from_one_user_is_429_json_and_starts_nothing(techpro, daphne):
    techpro.rate_limit_per_minute = 3
    techpro.save(update_fields=["rate_limit_per_minute"])
    codes = [post(daphne, "mallory", {"user_id": "mallory", "message": f"hi {n}"}).status_code for n in range(3)]
    assert codes == [200, 200, 200]
    refused = post(daphne, "mallory", {"user_id": "mallory", "message": "one more"})
    assert refused.status_code == 429 and "error" in refused.json()
    assert Conversation.objects.filter(user_id="mallory").count() == 3
    # Another user is not affected.
    assert post(daphne, "alice", {"user_id": "alice", "message": "hello"}).status_code == 200

"""The brand chat socket end to end: real channel layer, real Celery worker, the seed's client."""

from __future__ import annotations

import re
import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations import turns
from conversations.models import Conversation, Message, TurnState
from flows.demo import catalog
from flows.models import Brand
from tests.protocols.brand_chat_client import ChatbotWebSocket
from tests.protocols.channel_layer import take_sockets_out_of_group

pytestmark = pytest.mark.django_db(transaction=True)

ONE_SENTENCE = re.compile(r"[.!?](\s|$)")


@pytest.fixture
def shop(techpro: Brand) -> Brand:
    """TechPro with the demo catalog."""
    catalog.load(techpro)
    return techpro


@sync_to_async
def stored_answers(conversation_id: str) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id, kind="answer").order_by("seq"))


@sync_to_async
def message_count() -> int:
    return Message.objects.count()


@sync_to_async
def update_brand(brand: Brand, **fields: object) -> None:
    Brand.objects.filter(pk=brand.pk).update(**fields)


async def test_welcome_is_the_very_first_frame_with_or_without_a_trailing_slash(shop):
    for path in ("/ws/chat/techpro", "/ws/chat/techpro/"):
        client = ChatbotWebSocket(path=path)
        first = await client.connect()
        assert first == {
            "type": "welcome",
            "data": {
                "message": "Welcome to TechPro Solutions! How can I help you today?",
                "brand_id": "techpro",
                "brand_name": "TechPro Solutions",
            },
        }
        await client.close()


async def test_an_unknown_brand_gets_the_seeds_error_and_a_close(shop):
    client = ChatbotWebSocket("invalid-brand")
    first = await client.connect()
    assert first == {"type": "error", "data": {"message": "Brand 'invalid-brand' not found or inactive"}}
    assert await client.closed()


async def test_an_inactive_brand_is_refused_like_an_unknown_one(shop):
    await update_brand(shop, is_active=False)
    client = ChatbotWebSocket("techpro")
    first = await client.connect()
    assert first["data"]["message"] == "Brand 'techpro' not found or inactive"
    assert await client.closed()


async def test_a_chat_streams_chunks_then_one_complete_and_the_chunks_are_the_stored_answer(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("I need a laptop for business work")
    chunks, complete = await client.answer()
    assert len(chunks) > 1
    conversation_id = complete["data"]["conversation_id"]
    for chunk in chunks:
        assert chunk["data"]["is_final"] is False
        assert chunk["data"]["suggested_products"] is None
        assert chunk["data"]["confidence_score"] is None
        assert chunk["data"]["conversation_id"] == conversation_id
    data = complete["data"]
    assert data["content"] == "" and data["is_final"] is True
    products = data["suggested_products"]
    assert 1 <= len(products) <= 3
    for product in products:
        assert set(product) >= {"id", "name", "description", "category", "price", "features", "specifications",
                                "availability"}  # fmt: skip
        assert isinstance(product["price"], float)
    assert isinstance(data["confidence_score"], float) and 0 < data["confidence_score"] <= 1
    (answer,) = await stored_answers(conversation_id)
    assert client.current_message == answer.payload["content"]
    assert products[0]["name"] in client.current_message
    assert "business" in " ".join(p["description"].lower() for p in products)
    assert await client.nothing_more()
    await client.close()


async def test_conversation_id_continues_the_conversation_and_user_id_is_stored(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("Do you have a gaming monitor?", user_id="alice-42")
    await client.answer()
    first_id = client.conversation_id
    await client.send_message("What about a wireless mouse?", user_id="alice-42")
    _, complete = await client.answer()
    assert complete["data"]["conversation_id"] == first_id
    conversation = await sync_to_async(Conversation.objects.get)(pk=first_id)
    assert conversation.channel == "brand_chat" and conversation.user_id == "alice-42"
    kinds = await sync_to_async(lambda: list(conversation.messages.order_by("seq").values_list("kind", flat=True)))()
    assert kinds == ["chat", "answer", "chat", "answer"]
    assert "Mouse" in client.current_message or "mouse" in client.current_message
    await client.close()


async def test_a_first_message_with_null_conversation_id_starts_a_new_conversation_each_time(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send({"type": "chat", "data": {"message": "gaming laptop", "conversation_id": None}})
    _, first = await client.answer()
    await client.send({"type": "chat", "data": {"message": "gaming laptop"}})
    _, second = await client.answer()
    assert first["data"]["conversation_id"] != second["data"]["conversation_id"]
    await client.close()


async def test_voice_mode_answers_in_one_sentence(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("What is your cheapest laptop?", is_voice=True)
    _, complete = await client.answer()
    answer = client.current_message
    assert len(ONE_SENTENCE.findall(answer)) == 1 and answer.endswith((".", "!", "?"))
    assert "Acer Aspire 5 Slim" in answer and "7,499,000" in answer
    (stored,) = await stored_answers(complete["data"]["conversation_id"])
    assert stored.payload["voice"] is True
    # The suggestions are the products the answer is about: the one it names.
    assert [p["name"] for p in complete["data"]["suggested_products"]] == ["Acer Aspire 5 Slim"]
    await client.close()


async def test_a_follow_up_question_is_grounded_in_the_conversation_and_keeps_its_language(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("Saya butuh monitor untuk desain grafis")
    _, first = await client.answer()
    assert first["data"]["suggested_products"]
    await client.send_message("ok, berapa?")
    _, follow_up = await client.answer()
    assert follow_up["data"]["suggested_products"], "a follow-up keeps the conversation's products"
    assert follow_up["data"]["confidence_score"] is not None
    stored = await stored_answers(follow_up["data"]["conversation_id"])
    assert [answer.payload["language"] for answer in stored] == ["id", "id"]
    await client.close()


async def test_an_indonesian_question_gets_an_indonesian_answer(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("Saya butuh laptop ringan untuk kerja kantor, ada rekomendasi?")
    _, complete = await client.answer()
    assert client.current_message.startswith("Saya merekomendasikan")
    assert "Rp " in client.current_message
    assert complete["data"]["suggested_products"]
    (stored,) = await stored_answers(complete["data"]["conversation_id"])
    assert stored.payload["language"] == "id"
    await client.close()


async def test_an_unavailable_product_is_never_offered_as_available(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("Is the Lenovo Legion Pro 7i in stock?")
    _, complete = await client.answer()
    legion = next(p for p in complete["data"]["suggested_products"] if p["id"] == "laptop-008")
    assert legion["availability"] is False
    assert client.current_message.startswith("Sorry, the Lenovo Legion Pro 7i is currently out of stock.")
    assert "recommend the Lenovo Legion" not in client.current_message
    await client.close()


async def test_ping_gets_a_pong_with_a_timestamp(shop):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_ping()
    pong = await client.expect("pong")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", pong["data"]["timestamp"])
    await client.close()


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("{not json", "Invalid JSON"),
        ('["chat"]', "JSON objects"),
        ('{"type": "shout", "data": {}}', "Unknown message type"),
        ('{"type": 5, "data": {}}', "`type` must be a string"),
        ('{"type": "chat", "data": {}}', "`data.message` is required"),
        ('{"type": "chat", "data": {"message": 42}}', "`data.message` is required"),
        ('{"type": "chat", "data": {"message": "   "}}', "must not be empty"),
        ('{"type": "chat", "data": {"message": "hi", "voice": "yes"}}', "`data.voice` must be a boolean"),
        ('{"type": "chat", "data": {"message": "hi", "user_id": {"a": 1}}}', "`data.user_id`"),
        ('{"type": "chat", "data": {"message": "hi", "conversation_id": 7}}', "`data.conversation_id`"),
        ('{"type": "chat", "data": "hi"}', "`data` must be an object"),
    ],
)
async def test_bad_input_gets_an_error_stores_nothing_and_keeps_the_connection_open(shop, frame, expected):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send(frame)
    error = await client.expect("error")
    assert expected in error["data"]["message"]
    await client.send_ping()
    await client.expect("pong")
    assert await message_count() == 0
    await client.close()


async def test_a_message_over_the_brands_length_limit_is_refused(shop):
    await update_brand(shop, max_message_length=50)
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("x" * 51)
    error = await client.expect("error")
    assert error["data"]["message"] == "Message too long: at most 50 characters"
    await client.send_message("x" * 1001)
    await client.expect("error")
    assert await message_count() == 0
    await client.close()


async def test_an_unknown_or_forged_conversation_id_is_refused(shop):
    client = ChatbotWebSocket()
    await client.connect()
    for forged in (str(uuid.uuid4()), "conv-123456789"):
        await client.send({"type": "chat", "data": {"message": "hello", "conversation_id": forged}})
        error = await client.expect("error")
        assert error["data"]["message"].startswith("Unknown conversation_id")
    assert await sync_to_async(Conversation.objects.count)() == 0
    await client.close()


async def test_a_conversation_of_another_brand_cannot_be_continued(shop):
    other = await sync_to_async(Brand.objects.create)(slug="other", name="Other Shop")
    from conversations import services

    foreign = await sync_to_async(services.conversation_open)(other, "brand_chat")
    client = ChatbotWebSocket()
    await client.connect()
    await client.send({"type": "chat", "data": {"message": "hello", "conversation_id": str(foreign.pk)}})
    error = await client.expect("error")
    assert error["data"]["message"].startswith("Unknown conversation_id")
    await client.close()


async def test_a_message_while_the_answer_is_being_written_is_refused_as_busy(shop):
    from conversations import services

    conversation = await sync_to_async(services.conversation_open)(shop, "brand_chat")

    @sync_to_async
    def start_a_turn() -> None:
        with services.transaction.atomic():
            locked = services.lock_conversation(conversation.pk)
            turns.move(locked, TurnState.USER_WRITING, "test: the visitor is mid-turn")

    await start_a_turn()
    client = ChatbotWebSocket()
    await client.connect()
    await client.send({"type": "chat", "data": {"message": "hello?", "conversation_id": str(conversation.pk)}})
    error = await client.expect("error")
    assert "Still answering" in error["data"]["message"]
    assert await message_count() == 0
    await client.send_ping()
    await client.expect("pong")
    await client.close()


async def test_the_per_connection_rate_limit_refuses_the_extra_message_and_changes_nothing(shop, worker):
    await update_brand(shop, rate_limit_per_minute=2)
    client = ChatbotWebSocket()
    await client.connect()
    for text in ("gaming laptop", "4K monitor"):
        await client.send_message(text)
        await client.answer()
    before = await message_count()
    await client.send_message("wireless mouse")
    error = await client.expect("error")
    assert error["data"]["message"] == "Rate limit exceeded: at most 2 messages a minute. Please wait."
    assert await message_count() == before
    await client.send_ping()
    await client.expect("pong")
    assert await client.nothing_more()
    await client.close()


async def test_the_per_visitor_rate_limit_holds_across_connections(shop, worker):
    await update_brand(shop, rate_limit_per_minute=2)
    visitor = f"bob-{uuid.uuid4().hex[:8]}"
    first, second = ChatbotWebSocket(), ChatbotWebSocket()
    await first.connect()
    await second.connect()
    await first.send_message("gaming laptop", user_id=visitor)
    await first.answer()
    await second.send_message("4K monitor", user_id=visitor)
    await second.answer()
    before = await message_count()
    await first.send_message("wireless mouse", user_id=visitor)
    error = await first.expect("error")
    assert error["data"]["message"].startswith("Rate limit exceeded")
    assert await message_count() == before
    # Another visitor on the same connection is not affected by bob's limit.
    await first.send_message("wireless mouse", user_id=f"carol-{uuid.uuid4().hex[:8]}")
    await first.answer()
    await first.close()
    await second.close()


async def test_a_browser_from_a_foreign_origin_is_refused_and_an_allowed_one_accepted(shop):
    refused = ChatbotWebSocket(origin="https://evil.example")
    first = await refused.connect()
    assert first["type"] == "error"
    assert await refused.closed()
    allowed = ChatbotWebSocket(origin="http://localhost:3000")
    assert (await allowed.connect())["type"] == "welcome"
    await allowed.close()


async def test_a_question_nothing_matches_gets_a_helpful_answer_and_null_confidence(shop, worker):
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("Do you sell refrigerators?")
    _, complete = await client.answer()
    assert complete["data"]["suggested_products"] == []
    assert complete["data"]["confidence_score"] is None
    assert client.current_message.startswith("Sorry, I couldn't find a TechPro Solutions product")
    await client.close()


async def test_a_brand_with_a_model_streams_its_answer_and_the_model_sees_the_conversation(shop, worker, llm_server):
    await update_brand(shop, llm_provider="openai", llm_base_url=llm_server.url, llm_model="loopback-1")
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("I need a laptop for business work")
    chunks, complete = await client.answer()
    assert [c["data"]["content"] for c in chunks] == ["Hello", " from", " the", " loopback", " model", "."]
    assert complete["data"]["suggested_products"] and complete["data"]["confidence_score"] is not None
    await client.send_message("And a monitor for it?")
    await client.answer()
    sent = llm_server.requests[-1].body["messages"]
    contents = " ".join(str(m.get("content")) for m in sent)
    assert "I need a laptop for business work" in contents and "Hello from the loopback model." in contents
    assert "And a monitor for it?" in contents
    await client.close()


async def test_a_failing_model_falls_back_to_the_built_in_responder(shop, worker, llm_server):
    from tests.llm_server import Reply

    await update_brand(shop, llm_provider="openai", llm_base_url=llm_server.url)
    llm_server.queue(Reply(status=500))
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("wireless mouse")
    _, complete = await client.answer()
    assert client.current_message.startswith("I'd recommend the Logitech MX Master 3S")
    (stored,) = await stored_answers(complete["data"]["conversation_id"])
    assert stored.payload["content"] == client.current_message
    await client.close()


async def test_a_spent_daily_budget_answers_with_a_clear_notice(shop, worker):
    from conversations.generation.budget import BUDGET_SPENT_MESSAGE, record_usage

    await update_brand(shop, daily_token_budget=5)
    await sync_to_async(record_usage)(shop.pk, 5)
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("gaming laptop")
    _, complete = await client.answer()
    assert client.current_message == BUDGET_SPENT_MESSAGE["en"]
    assert complete["data"]["suggested_products"] == [] and complete["data"]["confidence_score"] is None
    await client.close()


async def _stop_live_events(conversation_id: str) -> None:
    await take_sockets_out_of_group(uuid.UUID(conversation_id))


async def test_an_answer_whose_live_events_were_lost_is_read_from_the_log(shop, worker, monkeypatch):
    from conversations.protocols import brand_chat

    monkeypatch.setattr(brand_chat, "WATCH_SECONDS", 0.3)
    client = ChatbotWebSocket()
    await client.connect()
    await client.send_message("I need a laptop for business work")
    _, first = await client.answer()
    conversation_id = first["data"]["conversation_id"]
    await _stop_live_events(conversation_id)
    await client.send_message("What about a monitor?")
    chunks, complete = await client.answer()
    (_, stored) = await stored_answers(conversation_id)
    assert "".join(c["data"]["content"] for c in chunks) == stored.payload["content"]
    assert complete["data"]["suggested_products"] == stored.payload["products"]
    await client.close()


@pytest.mark.parametrize("content", ["Hello", "", 'é "quoted" \\ back\nslash \u2028 \x00 \U0001f600'])
def test_a_chunk_frame_built_from_its_parts_is_the_json_of_the_chunk_message(content):
    import json
    from json.encoder import encode_basestring

    from conversations.protocols.brand_chat import chunk_frame_parts, chunk_message

    conversation_id = str(uuid.uuid4())
    head, tail = chunk_frame_parts(conversation_id)
    expected = json.dumps(chunk_message(content, conversation_id), ensure_ascii=False)
    assert head + encode_basestring(content) + tail == expected

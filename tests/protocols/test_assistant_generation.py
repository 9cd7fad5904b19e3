"""Assistant flows that hand the visitor's text to generation (`generate`, `onText`), end to end:
the real assistant socket, the real worker, the brand's catalog."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from flows.demo import catalog
from flows.models import Brand
from flows.services import flow_import, parse_flow_file
from tests.protocols.assistant_client import AssistantClient

pytestmark = pytest.mark.django_db(transaction=True)

SHOP_FLOW = {
    "welcome": {"sendRequest": {"kind": "BotText", "content": "Hi! I'm the ShopBot."}, "next": "menu"},
    "menu": {
        "sendRequest": {
            "kind": "ChoiceRequest",
            "groupId": "topic",
            "question": "What can I do for you?",
            "choices": [{"itemId": "ask", "content": "Ask about a product"}],
        },
        "onText": "generate",
    },
    "askChosen": {"matchResponse": {"kind": "ChoiceResponse", "groupId": "topic", "itemId": "ask"}, "next": "open"},
    "open": {"sendRequest": {"kind": "StartChatSession", "sessionId": "shop", "chatPrompt": "Ask away"}},
    "question": {"matchResponse": {"kind": "UserText", "sessionId": "shop"}, "generate": True, "next": "more"},
    "more": {"sendRequest": {"kind": "BotText", "content": "Anything else?"}},
}


def make_shop(flow: dict) -> Brand:
    brand = Brand.objects.create(slug="shopbot", name="ShopBot Store", allowed_origins="http://localhost:*")
    catalog.load(brand)
    flow_import(brand, parse_flow_file(json.dumps(flow)), name="Shop flow")
    return brand


async def streamed_answer(client: AssistantClient) -> tuple[str, dict]:
    """BotStream deltas up to the BotStreamEnd: (joined deltas, the end message)."""
    deltas = []
    for message in await client.receive_until("BotStreamEnd", timeout=15):
        if message["kind"] == "BotStream":
            deltas.append(message["delta"])
        else:
            assert message["kind"] == "BotStreamEnd", message
    return "".join(deltas), message


async def test_a_generate_state_streams_a_grounded_answer_and_the_flow_goes_on(worker):
    await sync_to_async(make_shop)(SHOP_FLOW)
    client = AssistantClient("/ws/assistant/shopbot/")
    await client.connect()
    await client.receive_until("ChoiceRequest")
    await client.send({"kind": "ChoiceResponse", "groupId": "topic", "itemId": "ask"})
    start = await client.receive()
    assert start["kind"] == "StartChatSession" and start["sessionId"] == "shop"
    await client.send({"kind": "UserText", "sessionId": "shop", "content": "I need a gaming monitor"})
    joined, end = await streamed_answer(client)
    assert joined == end["content"] and end["content"].startswith("I'd recommend the LG 27GP850-B UltraGear")
    assert end["products"][0]["id"] == "monitor-002" and 0 < end["confidence"] <= 1
    after = await client.receive()
    assert after["kind"] == "BotText" and after["content"] == "Anything else?" and after["seq"] > end["seq"]
    # The chat session stays open: a second question is answered too, in the visitor's language.
    await client.send({"kind": "UserText", "sessionId": "shop", "content": "Berapa harga mouse wireless?"})
    joined, end = await streamed_answer(client)
    assert joined == end["content"] and end["content"].startswith("Harga ")
    await client.close()


async def test_text_typed_where_choices_were_offered_is_answered_by_generation(worker):
    await sync_to_async(make_shop)(SHOP_FLOW)
    client = AssistantClient("/ws/assistant/shopbot/")
    await client.connect()
    await client.receive_until("ChoiceRequest")
    await client.send({"kind": "UserText", "sessionId": "none", "content": "Is the Lenovo Legion Pro 7i in stock?"})
    joined, end = await streamed_answer(client)
    assert joined == end["content"]
    assert end["content"].startswith("Sorry, the Lenovo Legion Pro 7i is currently out of stock.")
    # The choices are still waiting.
    await client.send({"kind": "ChoiceResponse", "groupId": "topic", "itemId": "ask"})
    assert (await client.receive())["kind"] == "StartChatSession"
    await client.close()


async def test_on_text_can_name_a_state_instead_of_rejecting_the_text(worker):
    flow = {**SHOP_FLOW, "menu": {**SHOP_FLOW["menu"], "onText": "pickPlease"}}
    flow["pickPlease"] = {"sendRequest": {"kind": "BotText", "content": "Please pick one of the choices above."}}
    await sync_to_async(make_shop)(flow)
    client = AssistantClient("/ws/assistant/shopbot/")
    await client.connect()
    await client.receive_until("ChoiceRequest")
    await client.send({"kind": "UserText", "sessionId": "none", "content": "hello?"})
    reply = await client.receive()
    assert reply["kind"] == "BotText" and reply["content"] == "Please pick one of the choices above."
    await client.send({"kind": "ChoiceResponse", "groupId": "topic", "itemId": "ask"})
    assert (await client.receive())["kind"] == "StartChatSession"
    await client.close()

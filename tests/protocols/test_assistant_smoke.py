import pytest

from tests.protocols.assistant_client import AssistantClient


@pytest.mark.django_db(transaction=True)
async def test_a_new_visitor_gets_the_greeting_and_the_language_choice(techpro, worker):
    client = AssistantClient()
    await client.connect()
    assert client.sid
    greeting = await client.receive()
    assert greeting == {"kind": "BotText", "content": "Hi, I'm Bot! Nice to meet you.", "seq": 1}
    choice = await client.receive()
    assert choice["kind"] == "ChoiceRequest" and choice["groupId"] == "lang" and choice["seq"] == 2
    await client.send({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "rust", "content": "Rust"})
    nxt = await client.receive()
    assert nxt["kind"] == "ChoiceRequest" and nxt["groupId"] == "others" and nxt["seq"] == 4
    await client.close()

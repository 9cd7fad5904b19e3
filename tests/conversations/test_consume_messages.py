"""`manage.py consume_messages`: the stored log as JSON lines, like `fluvio consume`."""

import io
import json
import threading
import time

import pytest
from django.core.management import call_command

from conversations import services
from conversations.models import Channel

pytestmark = pytest.mark.django_db(transaction=True)


def walk(brand, visitor: str = "v") -> None:
    conversation = services.conversation_open(brand, Channel.ASSISTANT, visitor_key=visitor)
    services.assistant_advance(conversation.pk)
    services.assistant_queue_input(conversation.pk, {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go"})
    services.assistant_advance(conversation.pk)


def consume(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("consume_messages", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_it_prints_every_stored_message_in_the_seeds_record_shape(techpro):
    walk(techpro)
    records = consume()
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["payload"] == {
        "kind": "Request",
        "message": {"kind": "BotText", "content": "Hi, I'm Bot! Nice to meet you."},
    }
    assert records[2]["payload"]["kind"] == "Response"
    assert records[2]["payload"]["message"]["content"] == "Go"
    assert {"sid", "timestamp", "brand", "channel"} <= records[0].keys()
    assert records[0]["brand"] == "techpro"


def test_a_negative_offset_prints_the_last_messages(techpro):
    walk(techpro)
    assert [r["seq"] for r in consume("--offset", "-2")] == [3, 4]


def test_brand_filters_and_an_unknown_brand_prints_nothing(techpro):
    walk(techpro)
    assert consume("--brand", "other") == []
    assert len(consume("--brand", "techpro")) == 4


def test_follow_prints_new_messages_as_they_are_stored(techpro):
    out = io.StringIO()
    thread = threading.Thread(
        target=lambda: call_command("consume_messages", "--follow", "--interval", "0.05", "--timeout", "3", stdout=out),
        daemon=True,
    )
    thread.start()
    time.sleep(0.3)
    walk(techpro)
    for _ in range(100):
        if len(out.getvalue().splitlines()) >= 4:
            break
        time.sleep(0.05)
    thread.join(10)
    assert not thread.is_alive()
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 2, 3, 4]

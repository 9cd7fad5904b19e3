"""An answer's grounding reads the visitor's message, the history before it and the visitor's
earlier texts in one query where it can: it must give what the three separate reads give."""

from __future__ import annotations

import random

import pytest

from conversations import services
from conversations.generation import pipeline
from conversations.models import Channel, Message

pytestmark = pytest.mark.django_db


def _separately(conversation, user_seq):
    message = pipeline._user_message(conversation, user_seq)
    seq = message.seq if message and message.seq else None
    return (
        message,
        pipeline._history(conversation, seq or user_seq + 1),
        pipeline._earlier_user_texts(conversation, seq or user_seq),
    )


@pytest.mark.parametrize("seed", range(12))
def test_one_read_gives_what_three_reads_give(techpro, seed):
    rng = random.Random(seed)
    conversation = services.conversation_open(techpro, Channel.BRAND_CHAT)
    # Conversations of every shape: long runs of bot messages (the visitor's earlier texts lie
    # beyond the history window), messages without text, bot messages after the visitor's.
    entries = []
    for index in range(rng.randint(1, 3 * pipeline.HISTORY_LIMIT)):
        direction = Message.Direction.IN if rng.random() < rng.choice([0.05, 0.3, 0.7]) else Message.Direction.OUT
        content = "" if rng.random() < 0.15 else f"text {index}"
        kind = "UserText" if direction == Message.Direction.IN else "BotText"
        entries.append((direction, kind, {"kind": kind, "content": content}))
    services.append_messages(conversation, entries)
    newest = pipeline._newest_messages(conversation)
    for user_seq in range(0, len(entries) + 2):
        expected = _separately(conversation, user_seq)
        assert pipeline._context(conversation, user_seq) == expected, user_seq
        # With the claim's read of the newest messages (messages after user_seq push older ones out).
        assert pipeline._context(conversation, user_seq, newest) == expected, user_seq

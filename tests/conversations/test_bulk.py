"""conversations/bulk.py prepares values as Django does: the short ways it takes for UUIDs and
JSON documents give what `get_db_prep_save` gives, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, models

from conversations import bulk
from conversations.models import Conversation, Message, TurnTransition

pytestmark = pytest.mark.django_db

AN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
VALUES: dict[tuple[type[models.Model], str], list[Any]] = {
    (Message, "conversation"): [AN_ID, str(AN_ID), AN_ID.hex, None],
    (Conversation, "id"): [AN_ID, str(AN_ID), None],
    (Message, "payload"): [{"kind": "ChoiceRequest", "choices": [{"itemId": "é"}]}, [1, "two"], "text", 3, None, {}],
    (Conversation, "flow_position"): [{"state": "lang", "vars": {}}, None],
    (Message, "seq"): [1, None],
    (Message, "created_at"): [datetime(2026, 12, 3, 8, 0, tzinfo=UTC)],
    (TurnTransition, "reason"): ["flow step", ""],
}


def comparable(value: Any) -> Any:
    # psycopg's Jsonb wraps the document without defining equality.
    return ("jsonb", value.obj) if hasattr(value, "obj") else value


@pytest.mark.parametrize(("model", "name"), list(VALUES))
def test_each_value_is_prepared_as_django_prepares_it(model: type[models.Model], name: str) -> None:
    field = model._meta.get_field(name)
    for value in VALUES[(model, name)]:
        prepared = bulk._prepare(connection, [field], [[value]])[0][0]
        assert comparable(prepared) == comparable(field.get_db_prep_save(value, connection)), value


def test_a_row_of_the_wrong_width_is_refused() -> None:
    fields = [Message._meta.get_field("seq"), Message._meta.get_field("kind")]
    with pytest.raises(ValueError, match="2 fields"):
        bulk._prepare(connection, fields, [[1, "a"], [2]])


def test_update_where_writes_the_named_fields_only_while_the_row_holds_what_was_expected(techpro) -> None:
    from conversations import services
    from conversations.models import Channel

    conversation = services.conversation_open(techpro, Channel.SESSIONS)
    stale = Conversation.objects.get(pk=conversation.pk)
    conversation.last_seq, conversation.last_error, conversation.meta = 7, "not written", {"a": 1}
    assert bulk.update_where(conversation, ["last_seq", "meta"], turn_state="idle") == 1
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.last_seq, stored.last_error, stored.meta) == (7, "", {"a": 1})

    stale.last_seq = 99
    assert bulk.update_where(stale, ["last_seq"], turn_state="ai_generating") == 0  # another state: refused
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 7

"""`POST /sessions/{user_id}/messages` fed hostile bodies and paths: never a server error, always
a JSON error body, and a refused request stores nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.models import Conversation, Message, TurnTransition
from tests.property.strategies import json_values, objects_with

# Hypothesis warns when it prints a 20 kB example; huge values are the point here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FEW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    objects_with({"message": "hello", "user_id": "alice", "session_id": None, "brand_id": "techpro"}).map(
        lambda v: json.dumps(v, ensure_ascii=True).encode()
    ),
    st.binary(max_size=300),
    st.just(b""),
)
user_ids = st.one_of(st.just("alice"), st.text(min_size=1, max_size=300), st.sampled_from(["..", "%00", "a/b", " "]))


def _counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Message.objects.count(), TurnTransition.objects.count()


@pytest.mark.django_db
@FEW
@given(user_id=user_ids, body=bodies)
def test_posting_anything_gets_a_json_answer_and_a_refusal_stores_nothing(techpro, user_id: str, body: bytes) -> None:
    before = _counts()
    safe_user = quote(user_id.encode("utf-8", "surrogatepass"), safe="")
    response = Client().post(f"/sessions/{safe_user}/messages", data=body, content_type="application/json")
    assert response.status_code < 500, response.content[:300]
    if response.status_code == 404 and not response.get("Content-Type", "").startswith("application/json"):
        return  # the path did not match the route at all (Django's own 404)
    payload: Any = json.loads(response.content)
    if response.status_code == 200:
        assert payload["status"] == "ok" and payload["session_id"]
    else:
        assert response.status_code in {400, 404, 409, 413, 415, 429}
        assert _counts() == before

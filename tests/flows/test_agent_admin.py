"""Staff configure agents in the admin; the demo emoji agent loads once."""

from __future__ import annotations

import pytest

from flows.demo import agents as demo_agents
from flows.models import Agent


def agent_form(**overrides: object) -> dict[str, object]:
    return {
        "name": "Helper",
        "kind": "keyword",
        "brand": "",
        "is_active": "on",
        "configuration": '{"keywords": ["help"]}',
        "welcome_message": "Hi {name}",
        "goodbye_message": "Bye",
        "summary_message": "",
        **overrides,
    }


@pytest.mark.django_db
def test_staff_create_an_agent_with_a_valid_configuration(admin_client):
    response = admin_client.post("/admin/flows/agent/add/", agent_form())
    assert response.status_code == 302
    assert Agent.objects.get(name="Helper").configuration == {"keywords": ["help"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "configuration"),
    [("pattern", '{"pattern": "(unclosed"}'), ("keyword", '{"keywords": []}'), ("llm", '{"fallback_keywords": []}')],
)
def test_the_admin_refuses_a_configuration_the_kind_cannot_use(admin_client, kind, configuration):
    response = admin_client.post("/admin/flows/agent/add/", agent_form(kind=kind, configuration=configuration))
    assert response.status_code == 200
    assert "configuration" in response.context["adminform"].form.errors
    assert not Agent.objects.filter(name="Helper").exists()


@pytest.mark.django_db
def test_the_demo_emoji_agent_loads_once_and_keeps_staff_edits(techpro):
    demo_agents.load(techpro)
    Agent.objects.filter(name="Emoji Analysis").update(goodbye_message="See you!")
    demo_agents.load(techpro)
    agent = Agent.objects.get(name="Emoji Analysis")
    assert agent.goodbye_message == "See you!" and agent.kind == Agent.Kind.PATTERN
    assert agent.summary_message == "You've used emojis in {count} messages!"

"""Agent kinds: the emoji pattern, keywords, the LLM classifier against the loopback model server."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from conversations.agents import kinds, wire
from conversations.generation import budget
from flows.models import Brand
from tests.llm_server import Reply


async def evaluate(kind: str, configuration: dict, value: str, brand: Brand | None = None, **overrides) -> bool:
    config = kinds.effective_config(kind, configuration, overrides)
    return await kinds.kind_for(kind).evaluate(config, value, brand)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("something the user typed with an emoji 👍", True),
        ("no emoji at all", False),
        ("sparkles ✨", True),
        ("a flag 🇮🇩", True),
        ("a red heart ❤️", True),
        ("a keycap #️⃣", True),
        ("skin tone 👋🏽", True),
        ("a family 👨‍👩‍👧", True),
        ("text-style symbols © ® ™ ❤ ☺ and digits 123 #", False),
        ("", False),
    ],
)
async def test_the_emoji_pattern_finds_emoji_like_the_seed_s_rgi_regex(text, expected):
    assert await evaluate("pattern", {"pattern": kinds.EMOJI_PATTERN}, text) is expected


async def test_a_pattern_can_ignore_case_and_be_negated():
    assert await evaluate("pattern", {"pattern": "^yes$", "ignore_case": True}, "YES") is True
    assert await evaluate("pattern", {"pattern": "^yes$", "negate": True}, "yes") is False


async def test_a_runaway_pattern_fails_instead_of_hanging_the_server():
    with pytest.raises(kinds.AgentFailed):
        await evaluate("pattern", {"pattern": r"(x+x+)+y"}, "x" * 5000)


@pytest.mark.parametrize(
    "configuration",
    [{}, {"pattern": ""}, {"pattern": "(unclosed"}, {"pattern": 5}, {"pattern": "x", "negate": "yes"}],
)
def test_a_bad_pattern_configuration_is_refused(configuration):
    with pytest.raises(kinds.ConfigError):
        kinds.effective_config("pattern", configuration)


async def test_keywords_match_whole_words_any_or_all():
    config = {"keywords": ["help", "stuck"]}
    assert await evaluate("keyword", config, "Can you HELP me?") is True
    assert await evaluate("keyword", config, "helpful text") is False
    assert await evaluate("keyword", {**config, "whole_words": False}, "helpful text") is True
    assert await evaluate("keyword", {**config, "match": "all"}, "help, I am stuck") is True
    assert await evaluate("keyword", {**config, "match": "all"}, "help me") is False


def test_overrides_apply_to_documented_keys_only():
    config = kinds.effective_config("keyword", {"keywords": ["a"]}, {"keywords": ["b"], "surprise": True})
    assert config.keywords == ("b",)
    llm = kinds.effective_config("llm", {"question": "Is it kind?"}, {"question": "Write a poem"})
    assert llm.question == "Is it kind?"


def brand_with_model(slug: str, url: str, **fields) -> Brand:
    return Brand.objects.create(
        slug=slug, name=slug.upper(), llm_provider=Brand.Provider.OPENAI, llm_base_url=url, **fields
    )


@pytest.mark.django_db(transaction=True)
async def test_the_llm_classifier_reads_yes_and_no_from_the_brand_s_model(llm_server):
    brand = await sync_to_async(brand_with_model)("llm", llm_server.url)
    llm_server.queue(Reply(tokens=("Yes", ".")), Reply(tokens=(" no",)))
    assert await evaluate("llm", {"question": "Is the text polite?"}, "thank you", brand) is True
    assert await evaluate("llm", {"question": "Is the text polite?"}, "go away", brand) is False
    sent = llm_server.requests[0].body["messages"]
    assert "Is the text polite?" in sent[-1]["content"] and "thank you" in sent[-1]["content"]
    # What the model streamed counts against the brand's daily budget, as answers do.
    assert await sync_to_async(budget.tokens_used_today)(brand.pk) == 3


@pytest.mark.django_db(transaction=True)
async def test_a_brand_that_has_spent_its_budget_asks_no_model_and_the_keywords_decide(llm_server):
    brand = await sync_to_async(brand_with_model)("spent", llm_server.url, daily_token_budget=5)
    await sync_to_async(budget.record_usage)(brand.pk, 5)
    config = {"question": "Does the user ask for help?", "fallback_keywords": ["help"]}
    assert await evaluate("llm", config, "please help", brand) is True
    assert await evaluate("llm", config, "nothing", brand) is False
    assert llm_server.requests == []
    assert await sync_to_async(budget.tokens_used_today)(brand.pk) == 5


@pytest.mark.django_db(transaction=True)
async def test_the_llm_classifier_falls_back_to_keywords_when_the_model_fails_or_is_offline(llm_server):
    config = {"question": "Does the user ask for help?", "fallback_keywords": ["help"]}
    broken = await sync_to_async(brand_with_model)("b", llm_server.url)
    llm_server.queue(Reply(status=500), Reply(tokens=("Maybe",)))
    assert await evaluate("llm", config, "please help", broken) is True
    assert await evaluate("llm", config, "nothing", broken) is False
    offline = Brand(slug="o", name="O", llm_provider=Brand.Provider.OFFLINE)
    assert await evaluate("llm", config, "help!", offline) is True
    assert await evaluate("llm", {"question": "Anything?"}, "help!", offline) is False


@pytest.mark.parametrize(
    ("value", "expected"), [(7, "7"), (7.0, "7"), ("  u-1 ", "u-1"), (12345678901234567890, "12345678901234567890")]
)
def test_ids_may_be_numbers_or_strings(value, expected):
    assert wire.normalise_id(value, "id") == expected


@pytest.mark.parametrize("value", [None, True, "", [], {"a": 1}, "x" * 201])
def test_unusable_ids_are_refused(value):
    with pytest.raises(wire.WireError):
        wire.normalise_id(value, "id")


def test_the_display_name_falls_back_from_name_to_personalname_and_username():
    assert wire.display_name({"name": "Ann", "personalname": "A", "username": "ann1"}) == "Ann"
    assert wire.display_name({"name": "", "personalname": "Annie", "username": "ann1"}) == "Annie"
    assert wire.display_name({"username": "ann1"}) == "ann1"
    assert wire.display_name({}) == "there"


def test_auth_without_an_agent_means_ignore_and_without_a_user_id_is_refused():
    assert wire.parse_auth({"user": {"id": 1}}) is None
    assert wire.parse_auth(None) is None
    with pytest.raises(wire.WireError):
        wire.parse_auth({"agent": {"name": "Emoji Analysis"}, "user": {"name": "no id"}})
    parsed = wire.parse_auth({"agent": {"name": "Emoji Analysis", "configuration": {"x": 1}}, "user": {"id": 3}})
    assert parsed == wire.Auth("Emoji Analysis", "3", "there", "", {"x": 1})

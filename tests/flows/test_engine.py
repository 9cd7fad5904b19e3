"""The flow engine on the seed's language flow: every path, and the save-time checks."""

import json
from pathlib import Path

import pytest

from flows.engine import Flow, FlowInvalid, Generate, Position, Rejection, SendRequest, Step, validate

SEED = json.loads((Path(__file__).resolve().parents[2] / "flows" / "demo" / "language-flow.json").read_text())


def kinds(step: Step) -> list[str]:
    return [a.message["kind"] for a in step.actions if isinstance(a, SendRequest)]


def choice(group: str, item: str) -> dict:
    return {"kind": "ChoiceResponse", "groupId": group, "itemId": item}


@pytest.fixture
def flow() -> Flow:
    return Flow(SEED)


def test_the_seed_flow_is_valid():
    assert validate(SEED) == []


def test_a_new_conversation_gets_the_greeting_then_waits_for_the_language_choice(flow):
    step = flow.start()
    assert kinds(step) == ["BotText", "ChoiceRequest"]
    assert step.actions[0].message["content"] == "Hi, I'm Bot! Nice to meet you."
    assert step.position == Position("langChoices", "lang", (), None)
    assert step.visited == ("greetings", "langChoices")


@pytest.mark.parametrize("item", ["rust", "go"])
def test_rust_and_go_lead_to_any_other(flow, item):
    step = flow.respond(flow.start().position, choice("lang", item))
    assert isinstance(step, Step)
    assert kinds(step) == ["ChoiceRequest"]
    assert step.actions[0].message["groupId"] == "others"
    assert step.position.choice_group == "others"


def test_other_opens_a_chat_session_and_the_typed_answer_closes_it(flow):
    opened = flow.respond(flow.start().position, choice("lang", "other"))
    assert kinds(opened) == ["StartChatSession"]
    assert opened.position.chat_sessions == ("langPreference",)
    assert opened.position.choice_group is None
    closed = flow.respond(opened.position, {"kind": "UserText", "sessionId": "langPreference", "content": "Zig"})
    assert kinds(closed) == ["EndChatSession", "ChoiceRequest"]
    assert closed.visited == ("getLangPrefResponse", "endLangPrefSession", "anyOtherChoices")
    assert closed.position.chat_sessions == ()
    assert closed.position.choice_group == "others"


def test_yes_goes_round_again_and_no_says_thanks(flow):
    others = flow.respond(flow.start().position, choice("lang", "go")).position
    again = flow.respond(others, choice("others", "yes"))
    assert kinds(again) == ["ChoiceRequest"] and again.position.choice_group == "lang"
    done = flow.respond(others, choice("others", "no"))
    assert kinds(done) == ["BotText"]
    assert done.actions[0].message["content"] == "Great, thanks!"
    assert not done.position.is_waiting


def test_it_rejects_a_choice_from_another_group(flow):
    result = flow.respond(flow.start().position, choice("others", "yes"))
    assert isinstance(result, Rejection)


def test_it_rejects_an_item_that_is_not_offered(flow):
    assert isinstance(flow.respond(flow.start().position, choice("lang", "cobol")), Rejection)


def test_it_rejects_a_choice_answered_twice(flow):
    after = flow.respond(flow.start().position, choice("lang", "other")).position
    assert isinstance(flow.respond(after, choice("lang", "rust")), Rejection)


def test_it_rejects_text_when_no_chat_session_is_open(flow):
    result = flow.respond(flow.start().position, {"kind": "UserText", "sessionId": "langPreference", "content": "x"})
    assert isinstance(result, Rejection)


def test_it_rejects_anything_once_the_flow_has_ended(flow):
    others = flow.respond(flow.start().position, choice("lang", "go")).position
    ended = flow.respond(others, choice("others", "no")).position
    assert isinstance(flow.respond(ended, choice("others", "no")), Rejection)


def test_the_position_survives_a_round_trip_through_json(flow):
    position = flow.respond(flow.start().position, choice("lang", "other")).position
    assert Position.from_json(json.loads(json.dumps(position.to_json()))) == position


def test_choice_content_fills_in_a_response_without_content(flow):
    assert flow.choice_content("lang", "go") == "Go"
    assert flow.choice_content("lang", "nope") is None


def broken(**changes) -> dict:
    definition = json.loads(json.dumps(SEED))
    for name, state in changes.items():
        definition[name] = state
    return definition


def test_a_next_that_names_no_state_is_caught_when_saved():
    errors = validate(broken(greetings={"sendRequest": {"kind": "BotText", "content": "hi"}, "next": "nowhere"}))
    assert any("`next` names no state" in e for e in errors)


def test_a_chain_that_loops_without_waiting_is_caught_when_saved():
    definition = broken(done={"sendRequest": {"kind": "BotText", "content": "again"}, "next": "loopBack"})
    definition["loopBack"] = {"sendRequest": {"kind": "BotText", "content": "and again"}, "next": "done"}
    errors = validate(definition)
    assert any("loops without waiting" in e for e in errors)
    with pytest.raises(FlowInvalid):
        Flow(definition)


def test_unknown_kinds_and_missing_fields_are_caught():
    errors = validate(broken(done={"sendRequest": {"kind": "Banner", "content": "x"}}))
    assert any("unknown kind 'Banner'" in e for e in errors)
    errors = validate(broken(done={"sendRequest": {"kind": "BotText"}}))
    assert any("`content` must be a non-empty string" in e for e in errors)


def test_a_choice_without_a_matching_state_is_caught():
    definition = broken()
    del definition["langChoiceGo"]
    assert any("`lang`/`go` has no state that matches it" in e for e in validate(definition))


def test_two_states_matching_the_same_response_are_caught():
    definition = broken(
        langChoiceGoAgain={
            "matchResponse": {"kind": "ChoiceResponse", "groupId": "lang", "itemId": "go"},
            "next": "done",
        }
    )
    assert any("answers the same response" in e for e in validate(definition))


def test_an_empty_flow_is_invalid():
    assert validate({}) and validate([]) and validate("x")


def test_generate_hands_the_visitors_text_to_generation():
    definition = {
        "ask": {"sendRequest": {"kind": "StartChatSession", "sessionId": "q"}},
        "question": {"matchResponse": {"kind": "UserText", "sessionId": "q"}, "generate": True, "next": "more"},
        "more": {"sendRequest": {"kind": "BotText", "content": "Anything else?"}},
    }
    flow = Flow(definition)
    step = flow.respond(flow.start().position, {"kind": "UserText", "sessionId": "q", "content": "cheap laptop"})
    assert isinstance(step, Step)
    assert isinstance(step.actions[0], Generate) and step.actions[0].text == "cheap laptop"
    assert isinstance(step.actions[1], SendRequest)


def test_on_text_answers_text_typed_where_choices_were_offered():
    definition = json.loads(json.dumps(SEED))
    definition["langChoices"]["onText"] = "generate"
    flow = Flow(definition)
    step = flow.respond(flow.start().position, {"kind": "UserText", "sessionId": "x", "content": "what?"})
    assert isinstance(step, Step) and isinstance(step.actions[0], Generate)
    assert step.position.choice_group == "lang"  # the choice is still waiting

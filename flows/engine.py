"""The flow engine: a pure function from (flow, position, visitor response) to what happens next.

No Django, Channels or Celery here. A flow is the seed's JSON: an object whose keys are state
names, in order, the first being where a conversation starts. A state has `sendRequest` and/or
`matchResponse` and an optional `next`. A state with `next` chains on at once (internal); a chain
stops at a state without `next` and the conversation waits for the visitor (external).

Additions, under keys a seed reader ignores:
- `"generate": true` (or an object of options) on a state: hand the visitor's text that led here
  to answer generation, streamed to the visitor, before the chain goes on.
- `"onText": "generate"` or `"onText": "<state>"` on a waiting state: what to do with text typed
  where choices were offered, instead of rejecting it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# --- Message kinds: what a state may send and what it may match --------------------------------


def _require_str(message: Mapping[str, Any], key: str, errors: list[str], where: str, optional: bool = False) -> None:
    value = message.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or (not optional and value == ""):
        errors.append(f"{where}: `{key}` must be a non-empty string")


def _check_bot_text(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "content", errors, where)


def _check_choice_request(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "question", errors, where)
    _require_str(message, "groupId", errors, where)
    choices = message.get("choices")
    if not isinstance(choices, list) or not choices:
        errors.append(f"{where}: `choices` must be a non-empty list")
        return
    seen: set[str] = set()
    for index, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            errors.append(f"{where}: choice {index + 1} must be an object")
            continue
        _require_str(choice, "itemId", errors, f"{where} choice {index + 1}")
        _require_str(choice, "content", errors, f"{where} choice {index + 1}")
        item_id = choice.get("itemId")
        if isinstance(item_id, str):
            if item_id in seen:
                errors.append(f"{where}: itemId `{item_id}` appears twice")
            seen.add(item_id)


def _check_start_chat(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "sessionId", errors, where)
    _require_str(message, "chatPrompt", errors, where, optional=True)
    _require_str(message, "chatText", errors, where, optional=True)


def _check_end_chat(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "sessionId", errors, where)


def _check_choice_match(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "groupId", errors, where)
    _require_str(message, "itemId", errors, where)


def _check_text_match(message: Mapping[str, Any], errors: list[str], where: str) -> None:
    _require_str(message, "sessionId", errors, where)


Checker = Callable[[Mapping[str, Any], list[str], str], None]

REQUEST_KINDS: dict[str, Checker] = {
    "BotText": _check_bot_text,
    "ChoiceRequest": _check_choice_request,
    "StartChatSession": _check_start_chat,
    "EndChatSession": _check_end_chat,
}
RESPONSE_KINDS: dict[str, Checker] = {
    "ChoiceResponse": _check_choice_match,
    "UserText": _check_text_match,
}


def response_key(message: Mapping[str, Any]) -> tuple[str, ...]:
    """What a response is matched by: (kind, groupId, itemId) or (kind, sessionId)."""
    kind = message.get("kind")
    if kind == "ChoiceResponse":
        return ("ChoiceResponse", str(message.get("groupId")), str(message.get("itemId")))
    return ("UserText", str(message.get("sessionId")))


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """What a conversation waits for. Stored as JSON on the conversation."""

    state: str | None = None
    choice_group: str | None = None
    chat_sessions: tuple[str, ...] = ()
    on_text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "choiceGroup": self.choice_group,
            "chatSessions": list(self.chat_sessions),
            "onText": self.on_text,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Position:
        if not data:
            return cls()
        return cls(
            state=data.get("state"),
            choice_group=data.get("choiceGroup"),
            chat_sessions=tuple(data.get("chatSessions") or ()),
            on_text=data.get("onText"),
        )

    @property
    def is_waiting(self) -> bool:
        return bool(self.choice_group or self.chat_sessions or self.on_text)


@dataclass(frozen=True)
class SendRequest:
    message: dict[str, Any]


@dataclass(frozen=True)
class Generate:
    """Stream a generated answer to `text` here."""

    text: str
    options: dict[str, Any] = field(default_factory=dict)


Action = SendRequest | Generate


@dataclass(frozen=True)
class Step:
    actions: tuple[Action, ...]
    position: Position
    visited: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejection:
    reason: str


class FlowInvalid(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- The flow ---------------------------------------------------------------------------------


class Flow:
    """A parsed, validated flow definition. Build once per published version and reuse."""

    def __init__(self, definition: Mapping[str, Any]) -> None:
        errors = validate(definition)
        if errors:
            raise FlowInvalid(errors)
        self.states: dict[str, Mapping[str, Any]] = dict(definition)
        self.start_state = next(iter(self.states))
        self._matches: dict[tuple[str, ...], str] = {
            response_key(state["matchResponse"]): name
            for name, state in self.states.items()
            if isinstance(state.get("matchResponse"), Mapping)
        }

    def start(self) -> Step:
        return self._run_chain(self.start_state, Position(), visitor_text=None)

    def choice_content(self, group_id: str, item_id: str) -> str | None:
        """The text of a choice, to fill in a ChoiceResponse that left `content` out."""
        for state in self.states.values():
            request = state.get("sendRequest")
            if (
                isinstance(request, Mapping)
                and request.get("kind") == "ChoiceRequest"
                and request.get("groupId") == group_id
            ):
                for choice in request["choices"]:
                    if choice["itemId"] == item_id:
                        return str(choice["content"])
        return None

    def respond(self, position: Position, response: Mapping[str, Any]) -> Step | Rejection:
        kind = response.get("kind")
        if kind == "ChoiceResponse":
            group_id = response.get("groupId")
            if group_id != position.choice_group:
                return Rejection(f"no choice `{group_id}` is waiting for an answer")
            target = self._matches.get(response_key(response))
            if target is None:
                return Rejection(f"`{response.get('itemId')}` is not one of the choices of `{group_id}`")
            after = Position(None, None, position.chat_sessions, None)
            return self._run_chain(target, after, visitor_text=None)
        if kind == "UserText":
            text = str(response.get("content") or "")
            session_id = response.get("sessionId")
            if session_id in position.chat_sessions:
                target = self._matches.get(response_key(response))
                if target is not None:
                    return self._run_chain(target, position, visitor_text=text)
            if position.on_text == "generate":
                return Step((Generate(text),), position, ())
            if position.on_text:
                return self._run_chain(position.on_text, position, visitor_text=text)
            return Rejection(f"no chat session `{session_id}` is open")
        return Rejection(f"`{kind}` is not a response")

    def _run_chain(self, name: str, position: Position, visitor_text: str | None) -> Step:
        actions: list[Action] = []
        visited: list[str] = []
        choice_group = position.choice_group
        sessions = list(position.chat_sessions)
        current: str | None = name
        state: Mapping[str, Any] = {}
        while current is not None:
            # Validation rules out loops and dangling names, so this always ends.
            state = self.states[current]
            visited.append(current)
            request = state.get("sendRequest")
            if isinstance(request, Mapping):
                actions.append(SendRequest(dict(request)))
                if request["kind"] == "ChoiceRequest":
                    choice_group = request["groupId"]
                elif request["kind"] == "StartChatSession" and request["sessionId"] not in sessions:
                    sessions.append(request["sessionId"])
                elif request["kind"] == "EndChatSession" and request["sessionId"] in sessions:
                    sessions.remove(request["sessionId"])
            generate = state.get("generate")
            if generate and visitor_text:
                actions.append(Generate(visitor_text, dict(generate) if isinstance(generate, Mapping) else {}))
            current = state.get("next") or None
        on_text = state.get("onText") if isinstance(state.get("onText"), str) else None
        return Step(tuple(actions), Position(visited[-1], choice_group, tuple(sessions), on_text), tuple(visited))


def validate(definition: Any) -> list[str]:
    """Every problem with a flow definition, in words staff can act on. Empty when valid."""
    if not isinstance(definition, Mapping) or not definition:
        return ["a flow must be a non-empty JSON object of states"]
    errors: list[str] = []
    offered_choices: set[tuple[str, ...]] = set()
    chat_sessions: set[str] = set()
    matches: dict[tuple[str, ...], str] = {}
    for name, state in definition.items():
        where = f"state `{name}`"
        if not isinstance(state, Mapping):
            errors.append(f"{where}: must be an object")
            continue
        request, match = state.get("sendRequest"), state.get("matchResponse")
        if request is None and match is None:
            errors.append(f"{where}: needs `sendRequest` or `matchResponse`")
        if request is not None:
            errors.extend(_check_message(request, REQUEST_KINDS, f"{where} sendRequest"))
            if (
                isinstance(request, Mapping)
                and request.get("kind") == "ChoiceRequest"
                and isinstance(request.get("choices"), list)
            ):
                for choice in request["choices"]:
                    if isinstance(choice, Mapping):
                        offered_choices.add(("ChoiceResponse", str(request.get("groupId")), str(choice.get("itemId"))))
            if isinstance(request, Mapping) and request.get("kind") == "StartChatSession":
                chat_sessions.add(str(request.get("sessionId")))
        if match is not None:
            match_errors = _check_message(match, RESPONSE_KINDS, f"{where} matchResponse")
            errors.extend(match_errors)
            if not match_errors:
                key = response_key(match)
                if key in matches:
                    errors.append(f"{where}: answers the same response as `{matches[key]}`")
                matches[key] = name
        target = state.get("next")
        if target is not None and (not isinstance(target, str) or target not in definition):
            errors.append(f"{where}: `next` names no state ({target!r})")
        on_text = state.get("onText")
        if on_text is not None and on_text != "generate" and on_text not in definition:
            errors.append(f'{where}: `onText` must be "generate" or a state name ({on_text!r})')
    first_name, first = next(iter(definition.items()))
    if isinstance(first, Mapping) and first.get("sendRequest") is None:
        errors.append(f"the first state `{first_name}` starts every conversation and must send something")
    for key, name in matches.items():
        if key[0] == "ChoiceResponse" and key not in offered_choices:
            errors.append(f"state `{name}`: no ChoiceRequest offers `{key[1]}`/`{key[2]}`")
        if key[0] == "UserText" and key[1] not in chat_sessions:
            errors.append(f"state `{name}`: no StartChatSession opens `{key[1]}`")
    for key in sorted(offered_choices - matches.keys()):
        errors.append(f"choice `{key[1]}`/`{key[2]}` has no state that matches it")
    errors.extend(_find_loops(definition))
    return errors


def _check_message(message: Any, kinds: Mapping[str, Checker], where: str) -> list[str]:
    if not isinstance(message, Mapping):
        return [f"{where}: must be an object"]
    kind = message.get("kind")
    checker = kinds.get(kind) if isinstance(kind, str) else None
    if checker is None:
        return [f"{where}: unknown kind {kind!r} (one of {', '.join(kinds)})"]
    errors: list[str] = []
    checker(message, errors, where)
    return errors


def _find_loops(definition: Mapping[str, Any]) -> list[str]:
    """A chain of `next` that comes back to itself never waits for the visitor."""
    errors: list[str] = []
    done: set[str] = set()
    for start in definition:
        path: list[str] = []
        current: Any = start
        while isinstance(current, str) and current in definition and current not in done:
            if current in path:
                loop = [*path[path.index(current) :], current]
                errors.append("a chain loops without waiting for the visitor: " + " → ".join(loop))
                break
            path.append(current)
            state = definition[current]
            current = state.get("next") if isinstance(state, Mapping) else None
        done.update(path)
    return errors

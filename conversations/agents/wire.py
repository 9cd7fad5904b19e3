"""The seed's payloads, parsed into typed values. Pure functions: no I/O.

`auth` (handshake) → Auth, or None when it has no `agent` (the seed: such connections are ignored).
`request` → Request. Anything malformed raises WireError, which the server turns into an `error`
event: `{"code": …, "message": …, "event": "request", "key": …}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from conversations.protocols.common import contains_nul

MAX_ID_CHARS = 200
MAX_NAME_CHARS = 200
MAX_KEY_CHARS = 200
MAX_VALUE_CHARS = 10_000
MAX_ANNOTATIONS_BYTES = 64 * 1024

ErrorCode = Literal["bad_request", "too_long", "rate_limited", "agent_failed", "bad_configuration"]


class ErrorPayload(TypedDict, total=False):
    code: ErrorCode
    message: str
    event: str
    key: str


class WireError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error_payload(error: WireError, event: str, key: str | None = None) -> ErrorPayload:
    payload: ErrorPayload = {"code": error.code, "message": error.message, "event": event}
    if key is not None:
        payload["key"] = key
    return payload


def normalise_id(value: Any, what: str) -> str:
    """Ids may be numbers or strings; rooms and stored keys use the string form."""
    if isinstance(value, bool) or value is None:
        raise WireError("bad_request", f"`{what}` must be a string or a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, str | int | float):
        raise WireError("bad_request", f"`{what}` must be a string or a number")
    text = str(value).strip()
    if not text:
        raise WireError("bad_request", f"`{what}` is empty")
    if len(text) > MAX_ID_CHARS:
        raise WireError("too_long", f"`{what}` is longer than {MAX_ID_CHARS} characters")
    return text


def display_name(user: dict[str, Any]) -> str:
    """`user.name`, falling back to `personalname` and `username` (SPEC)."""
    for key in ("name", "personalname", "username"):
        value = user.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_NAME_CHARS]
    return "there"


@dataclass(frozen=True)
class Auth:
    agent_name: str
    user_id: str
    display_name: str
    chat_id: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_auth(auth: Any) -> Auth | None:
    """None when there is no `auth.agent` (ignore the connection); WireError when it is unusable."""
    if not isinstance(auth, dict) or not auth.get("agent"):
        return None
    if contains_nul(auth):
        raise WireError("bad_request", "`auth` must not contain NUL characters")
    agent = auth["agent"]
    if not isinstance(agent, dict) or not isinstance(agent.get("name"), str) or not agent["name"].strip():
        raise WireError("bad_request", "`auth.agent.name` must be a non-empty string")
    user = auth.get("user")
    if not isinstance(user, dict) or "id" not in user:
        raise WireError("bad_request", "`auth.user.id` is required")
    chat = auth.get("chat")
    chat_id = normalise_id(chat["id"], "auth.chat.id") if isinstance(chat, dict) and chat.get("id") is not None else ""
    overrides = agent.get("configuration")
    return Auth(
        agent_name=agent["name"].strip()[:MAX_NAME_CHARS],
        user_id=normalise_id(user["id"], "auth.user.id"),
        display_name=display_name(user),
        chat_id=chat_id,
        overrides=overrides if isinstance(overrides, dict) else {},
    )


@dataclass(frozen=True)
class Request:
    key: str
    value: str
    # The whole payload as received (the seed's response is `{...payload, result}`).
    payload: dict[str, Any]


def parse_request(payload: Any, *, max_value_chars: int = MAX_VALUE_CHARS) -> Request:
    if not isinstance(payload, dict):
        raise WireError("bad_request", "a request is an object {key, value, annotations}")
    if contains_nul(payload):
        raise WireError("bad_request", "a request must not contain NUL characters")
    for name in ("key", "value"):
        if name not in payload:
            raise WireError("bad_request", f"`{name}` is required")
        if not isinstance(payload[name], str):
            raise WireError("bad_request", f"`{name}` must be a string")
    key, value = payload["key"], payload["value"]
    if not key.strip():
        raise WireError("bad_request", "`key` is empty")
    if len(key) > MAX_KEY_CHARS:
        raise WireError("too_long", f"`key` is longer than {MAX_KEY_CHARS} characters")
    if len(value) > max_value_chars:
        raise WireError("too_long", f"`value` is longer than {max_value_chars} characters")
    annotations = payload.get("annotations", [])
    if not isinstance(annotations, list):
        raise WireError("bad_request", "`annotations` must be an array")
    extra = {k: v for k, v in payload.items() if k not in {"key", "value"}}
    if len(json.dumps(extra, ensure_ascii=False)) > MAX_ANNOTATIONS_BYTES:
        raise WireError("too_long", f"`annotations` and other fields exceed {MAX_ANNOTATIONS_BYTES} bytes")
    # `result` is ours to set; a client's own is dropped rather than echoed back.
    clean = {k: v for k, v in payload.items() if k != "result"}
    clean.setdefault("annotations", [])
    return Request(key=key, value=value, payload=clean)

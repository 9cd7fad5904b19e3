"""One walk through the demo language flow (language-flow.json), as a client plays it.

Each step: the answer the visitor sends, the kind of the bot request that ends the step, and its
`groupId` when that request is a choice. The benchmark and the fault tests both play it.
"""

from __future__ import annotations

from typing import Any

WALKTHROUGH: list[tuple[dict[str, Any], str, str | None]] = [
    ({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "rust", "content": "Rust"}, "ChoiceRequest", "others"),
    ({"kind": "ChoiceResponse", "groupId": "others", "itemId": "yes", "content": "Yes"}, "ChoiceRequest", "lang"),
    ({"kind": "ChoiceResponse", "groupId": "lang", "itemId": "other", "content": "Other"}, "StartChatSession", None),
    ({"kind": "UserText", "sessionId": "langPreference", "content": "Python"}, "ChoiceRequest", "others"),
    ({"kind": "ChoiceResponse", "groupId": "others", "itemId": "no", "content": "No"}, "BotText", None),
]

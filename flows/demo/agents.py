"""The demo Socket.IO agents: the seed's emoji agent, under the name `Emoji Analysis`."""

from __future__ import annotations

from conversations.agents.kinds import EMOJI_PATTERN
from flows.models import Agent, Brand

EMOJI_AGENT = "Emoji Analysis"


def load(brand: Brand) -> None:
    """Idempotent: creates only the agents that are missing, and leaves staff edits alone."""
    Agent.objects.get_or_create(
        name=EMOJI_AGENT,
        defaults={
            "kind": Agent.Kind.PATTERN,
            "brand": brand,
            "configuration": {"pattern": EMOJI_PATTERN},
            "welcome_message": "Hello {name}, I will analyze all of your messages",
            "goodbye_message": "Goodbye!",
            "summary_message": "You've used emojis in {count} messages!",
            "is_active": True,
        },
    )

"""What happens at run time: conversations, their append-only message log, turn transitions."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence

from django.db import models
from django.db.models import Q
from django.utils import timezone

from flows.models import Brand, FlowVersion


class TurnState(models.TextChoices):
    IDLE = "idle"
    USER_WRITING = "user_writing"
    USER_COMMITTED = "user_committed"
    AI_GENERATING = "ai_generating"
    AI_COMMITTED = "ai_committed"
    ERROR = "error"
    TIMEOUT = "timeout"


class Channel(models.TextChoices):
    ASSISTANT = "assistant", "Bot assistant WebSocket"
    BRAND_CHAT = "brand_chat", "Brand chat WebSocket"
    SESSIONS = "sessions", "HTTP + SSE sessions"
    AGENT = "agent", "Socket.IO agent"


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    brand = models.ForeignKey(Brand, on_delete=models.PROTECT, related_name="conversations")
    channel = models.CharField(max_length=20, choices=Channel.choices)
    # A hash of the visitor's session value (never the value itself), or the integrator's user id.
    visitor_key = models.CharField(max_length=128, blank=True)
    user_id = models.CharField(max_length=200, blank=True, help_text="The client's user id, if any.")
    external_id = models.CharField(max_length=200, blank=True, help_text="E.g. a Socket.IO chat id.")
    flow_version = models.ForeignKey(FlowVersion, null=True, blank=True, on_delete=models.PROTECT)
    flow_position = models.JSONField(null=True, blank=True)
    turn_state = models.CharField(max_length=20, choices=TurnState.choices, default=TurnState.IDLE)
    turn_changed_at = models.DateTimeField(default=timezone.now)
    last_seq = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["brand", "channel", "visitor_key"], name="conv_visitor_idx"),
            models.Index(fields=["turn_state", "turn_changed_at"], name="conv_turn_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.brand.slug}/{self.channel}/{str(self.id)[:8]}"

    @property
    def group_name(self) -> str:
        """The channel-layer group every adapter showing this conversation joins."""
        return f"conv.{self.id.hex}"


class Message(models.Model):
    """One entry of a conversation's append-only log.

    `seq` is the position in the conversation, 1, 2, 3 … It is null only while a visitor's
    input waits in the inbox to be applied; rejected inputs are deleted, never numbered.
    """

    class Direction(models.TextChoices):
        IN = "in", "from the visitor"
        OUT = "out", "to the visitor"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField(null=True, blank=True)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=40)
    payload = models.JSONField()
    client_id = models.CharField(max_length=100, null=True, blank=True)
    cut_off = models.BooleanField(default=False, help_text="A partial answer cut off by a failure.")
    # While an input waits in the inbox: the channel name of the socket that sent it, so that a
    # rejection reaches that socket only.
    reply_channel = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["conversation", "seq", "id"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="message_created_idx"),
            # The inbox: inputs waiting to be applied (the sweeper looks for old ones).
            models.Index(fields=["created_at"], condition=Q(seq__isnull=True), name="message_inbox_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"

    @property
    def text(self) -> str:
        """The human-readable text of the message, for transcripts."""
        payload = self.payload or {}
        for key in ("content", "question", "message", "value", "chatText"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
        return ""


class TurnTransition(models.Model):
    """Audit trail of turn states: one row per move, or per path of moves made at one instant
    (a flow step passes through five states at once), with why. `via` holds the states passed
    between `from_state` and `to_state`, comma-separated: one row instead of five per flow step
    kept SQLite's write lock free for everything else (docs/performance.md)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=TurnState.choices)
    via = models.CharField(max_length=200, blank=True, default="")
    to_state = models.CharField(max_length=20, choices=TurnState.choices)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["conversation", "id"]

    def __str__(self) -> str:
        return " → ".join(self.path())

    @staticmethod
    def via_for(states: Sequence[str]) -> str:
        """The `via` of a row whose path passes through `states` (in order)."""
        return ",".join(states)

    def path(self) -> list[str]:
        """Every state of the row in order, from `from_state` to `to_state`."""
        return [self.from_state, *filter(None, self.via.split(",")), self.to_state]

    def moves(self) -> list[tuple[str, str]]:
        """The row's single moves, as (from, to) pairs."""
        return list(itertools.pairwise(self.path()))


class DailyUsage(models.Model):
    """Generation spend per brand per day, for the daily budget."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["brand", "day"], name="usage_unique_per_day")]

    def __str__(self) -> str:
        return f"{self.brand_id} {self.day}: {self.tokens} tokens"

"""The turn state machine: the seed's states and transitions, validated in one place.

A conversation never has two answers generated at once because every move is a conditional
UPDATE (`WHERE turn_state = <expected>`): of two workers or requests racing, exactly one changes
the row; the other sees zero rows and loses. On PostgreSQL callers also hold the row lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone

from conversations import bulk
from conversations.models import Conversation, TurnState, TurnTransition

S = TurnState

ALLOWED: dict[str, frozenset[str]] = {
    S.IDLE: frozenset({S.USER_WRITING, S.TIMEOUT}),
    S.USER_WRITING: frozenset({S.USER_COMMITTED, S.ERROR}),
    S.USER_COMMITTED: frozenset({S.AI_GENERATING, S.ERROR}),
    S.AI_GENERATING: frozenset({S.AI_COMMITTED, S.ERROR}),
    S.AI_COMMITTED: frozenset({S.IDLE}),
    S.ERROR: frozenset({S.IDLE}),
    S.TIMEOUT: frozenset({S.IDLE}),
}

# States from which a new visitor message may start a turn (after moving back to idle).
READY_FOR_INPUT = frozenset({S.IDLE, S.AI_COMMITTED, S.ERROR, S.TIMEOUT})
# States in which a turn is under way.
IN_FLIGHT = frozenset({S.USER_WRITING, S.USER_COMMITTED, S.AI_GENERATING})


class TransitionRefused(Exception):
    """The move is not one of the seed's transitions, or another actor moved first."""


def is_allowed(from_state: str, to_state: str) -> bool:
    return to_state in ALLOWED.get(from_state, frozenset())


# An audit row (TurnTransition) as values, for `bulk.insert_rows`.
TRANSITION_FIELDS = ("conversation", "from_state", "via", "to_state", "reason", "created_at")


def move(conversation: Conversation, to_state: str, reason: str = "", *, also: Sequence[str] = ()) -> None:
    """Move `conversation` from its current state to `to_state`, or raise TransitionRefused.

    Call inside a transaction. `conversation.turn_state` must be what the caller last read:
    if the row changed since, the conditional update matches nothing and the move is refused.
    `also`: other fields of the instance the caller changed, written by the same UPDATE.
    """
    move_through(conversation, [to_state], reason, also=also)


def move_through(conversation: Conversation, states: list[str], reason: str = "", *, also: Sequence[str] = ()) -> None:
    """Several moves in one conditional UPDATE (with the fields `also`, see `move`); every step
    is still checked, and recorded in one audit row (`TurnTransition.via`). Two statements in
    all: a turn is taken on the hot paths of every protocol."""
    from_state, changed_at = conversation.turn_state, conversation.turn_changed_at
    if not states:
        return
    _, via, to_state = plan_through(conversation, states)
    conversation.updated_at = conversation.turn_changed_at
    names = ("turn_state", "turn_changed_at", "updated_at", *also)
    if bulk.update_where(conversation, names, turn_state=from_state) != 1:
        conversation.turn_state, conversation.turn_changed_at = from_state, changed_at
        raise TransitionRefused(f"{from_state} → {states[-1]} lost a race")
    bulk.insert_rows(
        TurnTransition,
        TRANSITION_FIELDS,
        [(conversation.pk, from_state, via, to_state, reason[:300], conversation.turn_changed_at)],
    )


def plan_through(conversation: Conversation, states: list[str], at: datetime | None = None) -> tuple[str, str, str]:
    """Check a path of moves and apply it to the instance only, returning the audit row that
    records it: (from_state, via, to_state). The caller holds the row lock and writes the row
    and the audit row (a worker applying a batch of steps does so for many conversations, all
    `at` the batch's one time, which is then converted for the database once)."""
    if not states:
        raise ValueError("a path of moves needs at least one state")
    path = [conversation.turn_state, *states]
    for before, after in itertools.pairwise(path):
        if not is_allowed(before, after):
            raise TransitionRefused(f"{before} → {after} is not a turn transition")
    conversation.turn_state = states[-1]
    conversation.turn_changed_at = at or timezone.now()
    return path[0], TurnTransition.via_for(states[:-1]), states[-1]

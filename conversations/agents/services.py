"""Engagements: one Conversation (channel "agent") per agent, user and chat.

The conversation's `visitor_key` and `user_id` hold the client's user id, `external_id` the chat
id, `meta` the agent (`agent_id`, `agent_name`), the user's display name and two counters:
`true_count` (responses with result true) and `summary_count` (the count last summarised).
Requests, responses and interjections are stored as Messages (kinds `request`, `response`,
`interjection`) with the payloads sent on the wire. Emitting is the caller's job, after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q

from conversations import services
from conversations.agents import kinds
from conversations.agents.wire import Auth, Request
from conversations.models import Channel, Conversation, Message
from conversations.protocols.common import db_async
from flows.models import Agent, Brand

OUT, IN = Message.Direction.OUT, Message.Direction.IN


class AgentUnavailable(Exception):
    """No active agent by that name, or no brand to keep its transcripts."""


@dataclass(frozen=True)
class Engagement:
    conversation_id: str
    agent_id: int
    kind: str
    config: Any  # the kind's typed configuration, overrides applied
    brand: Brand
    room: str


@dataclass(frozen=True)
class Connected:
    engagement: Engagement
    welcome: dict[str, Any] | None  # the interjection to send: only when the engagement is new
    config_error: str | None  # the client's overrides were refused; the agent's own config is used


def _fill(template: str, **values: object) -> str:
    # Plain replacement, not str.format: staff text may contain other braces.
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def agent_for_name(name: str) -> Agent | None:
    return Agent.objects.select_related("brand").filter(name=name, is_active=True).first()


def _brand_for(agent: Agent) -> Brand:
    if agent.brand is not None and agent.brand.is_active:
        return agent.brand
    brand = Brand.objects.filter(is_active=True).order_by("id").first()
    if brand is None:
        raise AgentUnavailable("no active brand to hold the transcript")
    return brand


def engagement_connect(auth: Auth) -> Connected:
    """A socket connects: find the user's open engagement with the agent in this chat, or open one
    (storing the welcome interjection). Reconnecting keeps the engagement."""
    agent = agent_for_name(auth.agent_name)
    if agent is None:
        raise AgentUnavailable(f"no active agent named {auth.agent_name!r}")
    try:
        config = kinds.effective_config(agent.kind, agent.configuration, auth.overrides)
        config_error = None
    except kinds.ConfigError as exc:
        config_error = str(exc)
        try:
            config = kinds.effective_config(agent.kind, agent.configuration)
        except kinds.ConfigError as own:
            raise AgentUnavailable(f"agent {agent.name!r} is misconfigured: {own}") from own
    brand = _brand_for(agent)
    welcome = None
    with transaction.atomic():
        # Serialises openings for this agent so that two sockets of one user open one engagement.
        list(Agent.objects.select_for_update().filter(pk=agent.pk).values_list("pk", flat=True))
        conversation = _open_engagement(agent, auth)
        if conversation is None:
            conversation = services.conversation_open(
                brand,
                Channel.AGENT,
                visitor_key=auth.user_id,
                user_id=auth.user_id,
                external_id=auth.chat_id,
                meta={
                    "agent_id": agent.pk,
                    "agent_name": agent.name,
                    "user_name": auth.display_name,
                    "true_count": 0,
                    "summary_count": 0,
                },
            )
            if agent.welcome_message:
                welcome = {"message": _fill(agent.welcome_message, name=auth.display_name)}
                locked = services.lock_conversation(conversation.pk)
                services.append_messages(locked, [(OUT, "interjection", welcome)])
                locked.save(update_fields=["last_seq", "updated_at"])
    engagement = Engagement(str(conversation.pk), agent.pk, agent.kind, config, conversation.brand, auth.user_id)
    return Connected(engagement, welcome, config_error)


def _open_engagement(agent: Agent, auth: Auth) -> Conversation | None:
    return (
        Conversation.objects.select_related("brand")
        .filter(
            channel=Channel.AGENT,
            visitor_key=auth.user_id,
            external_id=auth.chat_id,
            ended_at__isnull=True,
            meta__agent_id=agent.pk,
        )
        .order_by("-created_at")
        .first()
    )


def engagement_is_open(conversation_id: str) -> bool:
    return Conversation.objects.filter(pk=conversation_id, ended_at__isnull=True).exists()


def engagement_record(conversation_id: str, request: Request, result: bool) -> dict[str, Any] | None:
    """Store a request and its response; the response payload, or None if the engagement ended."""
    with transaction.atomic():
        conversation = services.lock_conversation(conversation_id)
        if conversation.ended_at is not None:
            return None
        response = {**request.payload, "result": result}
        services.append_messages(conversation, [(IN, "request", request.payload), (OUT, "response", response)])
        if result:
            conversation.meta = {**conversation.meta, "true_count": int(conversation.meta.get("true_count", 0)) + 1}
        conversation.save(update_fields=["last_seq", "meta", "updated_at"])
    return response


async def engagement_answer(engagement: Engagement, request: Request) -> dict[str, Any] | None:
    """Evaluate a request with the agent and store both; None when the engagement has ended.

    Raises kinds.AgentFailed when the agent cannot decide (nothing is stored then)."""
    if not await db_async(engagement_is_open)(engagement.conversation_id):
        return None
    result = await kinds.kind_for(engagement.kind).evaluate(engagement.config, request.value, engagement.brand)
    return await db_async(engagement_record)(engagement.conversation_id, request, bool(result))


def engagement_end(conversation_id: str) -> dict[str, Any] | None:
    """The client's `end`: store the goodbye and end the engagement. The goodbye interjection to
    send, or None when it had already ended (or the agent has no goodbye text)."""
    with transaction.atomic():
        conversation = services.lock_conversation(conversation_id)
        if conversation.ended_at is not None:
            return None
        agent = Agent.objects.filter(pk=conversation.meta.get("agent_id")).first()
        goodbye = None
        if agent is not None and agent.goodbye_message:
            name = conversation.meta.get("user_name", "there")
            goodbye = {"message": _fill(agent.goodbye_message, name=name)}
            services.append_messages(conversation, [(OUT, "interjection", goodbye)])
            conversation.save(update_fields=["last_seq", "updated_at"])
        services.conversation_end(conversation.pk, "ended by the client")
    return goodbye


# --- The periodic summary ----------------------------------------------------------------------


def summaries_due() -> list[str]:
    """Open engagements whose count of true results changed since the last summary."""
    candidates = Conversation.objects.filter(
        Q(meta__true_count__gt=0), channel=Channel.AGENT, ended_at__isnull=True
    ).values_list("pk", "meta")
    return [str(pk) for pk, meta in candidates if int(meta.get("true_count", 0)) != int(meta.get("summary_count", 0))]


def engagement_summarise(conversation_id: str) -> tuple[str, dict[str, Any]] | None:
    """Store the summary interjection if the count changed: (room, interjection), or None.
    Safe to run twice: the second run finds the count already summarised."""
    with transaction.atomic():
        conversation = services.lock_conversation(conversation_id)
        count = int(conversation.meta.get("true_count", 0))
        if conversation.ended_at is not None or count == 0 or count == conversation.meta.get("summary_count", 0):
            return None
        agent = Agent.objects.filter(pk=conversation.meta.get("agent_id")).first()
        conversation.meta = {**conversation.meta, "summary_count": count}
        interjection = None
        if agent is not None and agent.summary_message:
            interjection = {"message": _fill(agent.summary_message, count=count).strip()}
            services.append_messages(conversation, [(OUT, "interjection", interjection)])
        conversation.save(update_fields=["last_seq", "meta", "updated_at"])
    return (conversation.user_id, interjection) if interjection else None

"""Changes to authored data: publishing, importing and exporting flows."""

from __future__ import annotations

import json
from typing import Any

import nh3
from django.db import transaction
from django.db.models import Max

from flows.engine import FlowInvalid, validate
from flows.models import Brand, Flow, FlowState, FlowVersion

STATE_KEYS = ("sendRequest", "matchResponse", "next")


def sanitize_html(text: str) -> str:
    """Staff may write HTML in bot texts (the seed allows it); keep only harmless markup."""
    if "<" not in text and "&" not in text:
        return text
    return nh3.clean(
        text,
        tags={"a", "b", "strong", "i", "em", "u", "br", "p", "ul", "ol", "li", "code"},
        link_rel="noopener noreferrer nofollow",
    )


def _sanitized(definition: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, state in definition.items():
        state = dict(state)
        request = state.get("sendRequest")
        if isinstance(request, dict) and request.get("kind") == "BotText" and isinstance(request.get("content"), str):
            state["sendRequest"] = {**request, "content": sanitize_html(request["content"])}
        cleaned[name] = state
    return cleaned


def flow_definition_from_states(flow: Flow) -> dict[str, Any]:
    return {state.name: state.as_definition_entry() for state in flow.states.all()}


@transaction.atomic
def flow_publish(flow: Flow, definition: dict[str, Any] | None = None, note: str = "") -> FlowVersion:
    """Validate and publish `definition` (default: the flow's states) as the flow's next version.

    Raises FlowInvalid with every problem found; nothing changes then.
    """
    if definition is None:
        definition = flow_definition_from_states(flow)
    definition = _sanitized(definition)
    errors = validate(definition)
    if errors:
        raise FlowInvalid(errors)
    number = (flow.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = FlowVersion.objects.create(
        flow=flow, number=number, definition_json=json.dumps(definition, indent=4, ensure_ascii=False), note=note
    )
    flow.published_version = version
    flow.save(update_fields=["published_version", "updated_at"])
    return version


@transaction.atomic
def flow_replace_states(flow: Flow, definition: dict[str, Any]) -> None:
    flow.states.all().delete()
    FlowState.objects.bulk_create(
        FlowState(
            flow=flow,
            position=index,
            name=name,
            send_request=state.get("sendRequest"),
            match_response=state.get("matchResponse"),
            next=state.get("next") or "",
            extra={k: v for k, v in state.items() if k not in STATE_KEYS},
        )
        for index, (name, state) in enumerate(definition.items())
    )


@transaction.atomic
def flow_import(brand: Brand, definition: Any, *, name: str = "Assistant", activate: bool = True) -> Flow:
    """Import a flow in the seed's JSON format as the brand's flow called `name`, and publish it."""
    errors = validate(definition)
    if errors:
        raise FlowInvalid(errors)
    flow = Flow.objects.filter(brand=brand, name=name).first()
    if flow is None:
        flow = Flow.objects.create(brand=brand, name=name, is_active=False)
    if activate:
        Flow.objects.filter(brand=brand, is_active=True).exclude(pk=flow.pk).update(is_active=False)
        flow.is_active = True
        flow.save(update_fields=["is_active", "updated_at"])
    flow_replace_states(flow, definition)
    flow_publish(flow, definition, note="imported")
    return flow


def flow_export(flow: Flow) -> str:
    """The published version in the seed's JSON format (the draft's states if never published)."""
    if flow.published_version is not None:
        return flow.published_version.definition_json + "\n"
    return json.dumps(flow_definition_from_states(flow), indent=4, ensure_ascii=False) + "\n"


def parse_flow_file(text: str) -> dict[str, Any]:
    """Parse a flow file, keeping the order of its states. Raises FlowInvalid on bad JSON."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FlowInvalid([f"not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise FlowInvalid(["a flow file must hold one JSON object of states"])
    return data

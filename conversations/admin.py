"""Transcript review: find, read, export and delete conversations."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from conversations.models import Conversation, DailyUsage, Message, TurnTransition


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    readonly_fields = ("seq", "direction", "kind", "text_shown", "cut_off", "created_at")
    fields = readonly_fields
    ordering = ["seq"]

    @admin.display(description="text")
    def text_shown(self, message: Message) -> str:
        return message.text or json.dumps(message.payload, ensure_ascii=False)[:300]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TurnTransitionInline(admin.TabularInline):
    model = TurnTransition
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "from_state", "via", "to_state", "reason")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["short_id", "brand", "channel", "user_id", "turn_state", "last_seq", "created_at", "ended_at"]
    list_filter = ["channel", "turn_state", "brand", "created_at"]
    list_select_related = ["brand"]
    search_fields = ["id", "user_id", "external_id", "messages__payload__content"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "brand",
        "channel",
        "user_id",
        "external_id",
        "flow_version",
        "flow_position",
        "turn_state",
        "turn_changed_at",
        "last_seq",
        "last_error",
        "meta",
        "created_at",
        "ended_at",
    ]
    exclude = ["visitor_key"]
    inlines = [MessageInline, TurnTransitionInline]
    actions = ["export_jsonl"]
    show_full_result_count = False

    @admin.display(description="conversation")
    def short_id(self, conversation: Conversation) -> str:
        return str(conversation.id)[:8]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct() if search_term else queryset, False

    @admin.action(description="Export selected transcripts (JSON lines)")
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        lines = []
        for conversation in queryset.select_related("brand").prefetch_related("messages"):
            for message in conversation.messages.all():
                if message.seq is None:
                    continue
                lines.append(
                    json.dumps(
                        {
                            "conversation": str(conversation.id),
                            "brand": conversation.brand.slug,
                            "channel": conversation.channel,
                            "seq": message.seq,
                            "direction": message.direction,
                            "kind": message.kind,
                            "payload": message.payload,
                            "cut_off": message.cut_off,
                            "timestamp": message.created_at.isoformat(),
                        },
                        ensure_ascii=False,
                    )
                )
        response = HttpResponse("\n".join(lines) + "\n", content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="transcripts.jsonl"'
        return response


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ["brand", "day", "requests", "tokens"]
    list_filter = ["brand"]
    list_select_related = ["brand"]

"""Staff authoring: brands, catalogs, flows (states edited inline, published on save), agents."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse

from flows.engine import FlowInvalid, validate
from flows.models import Agent, Brand, Flow, FlowState, FlowVersion, Product
from flows.services import flow_export, flow_import, flow_publish, parse_flow_file


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "llm_provider", "rate_limit_per_minute"]
    list_filter = ["is_active", "llm_provider"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "welcome_message", "is_active", "allowed_origins"]}),
        (
            "Answers",
            {
                "fields": [
                    "llm_provider",
                    "llm_base_url",
                    "llm_model",
                    "llm_api_key",
                    "fallback_to_offline",
                    "system_prompt",
                ]
            },
        ),
        ("Limits", {"fields": ["max_message_length", "rate_limit_per_minute", "daily_token_budget"]}),
    ]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "brand", "category", "price", "availability"]
    list_filter = ["brand", "category", "availability"]
    list_select_related = ["brand"]
    search_fields = ["name", "external_id", "description"]
    change_list_template = "admin/flows/product/change_list.html"

    class ImportForm(forms.Form):
        brand = forms.ModelChoiceField(queryset=Brand.objects.all())
        file = forms.FileField(
            help_text="CSV (header: id, name, description, category, price, features, specifications, "
            "availability) or JSON (a list of the seed's product objects). Products are matched by id."
        )

    def get_urls(self) -> list[Any]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="flows_product_import"),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        from flows.catalog_import import ImportInvalid, products_import_file

        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            return HttpResponseRedirect(reverse("admin:index"))
        form = self.ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = products_import_file(form.cleaned_data["brand"], upload.read(), upload.name)
            except ImportInvalid as exc:
                for error in exc.errors[:50]:
                    form.add_error("file", error)
            else:
                messages.success(request, f"Imported products for {form.cleaned_data['brand']}: {result}.")
                return HttpResponseRedirect(reverse("admin:flows_product_changelist"))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Import products",
                   "opts": self.model._meta}  # fmt: skip
        return render(request, "admin/flows/product/import.html", context)


class FlowStateFormSet(forms.BaseInlineFormSet):
    """Validates the whole flow the states make, so a broken flow is never saved."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        rows = []
        for form in self.forms:
            if not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            rows.append(form.cleaned_data)
        rows.sort(key=lambda row: row.get("position") or 0)
        definition: dict[str, Any] = {}
        for row in rows:
            state = FlowState(
                name=row["name"],
                send_request=row.get("send_request"),
                match_response=row.get("match_response"),
                next=row.get("next") or "",
                extra=row.get("extra") or {},
            )
            if state.name in definition:
                raise forms.ValidationError(f"two states are called `{state.name}`")
            definition[state.name] = state.as_definition_entry()
        errors = validate(definition)
        if errors:
            raise forms.ValidationError(errors)


class FlowStateInline(admin.StackedInline):
    model = FlowState
    formset = FlowStateFormSet
    extra = 0
    fields = [("position", "name", "next"), ("send_request", "match_response"), "extra"]


class FlowVersionInline(admin.TabularInline):
    model = FlowVersion
    extra = 0
    readonly_fields = ("number", "created_at", "note")
    fields = readonly_fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FlowImportForm(forms.Form):
    brand = forms.ModelChoiceField(queryset=Brand.objects.all())
    name = forms.CharField(initial="Assistant", help_text="An existing flow of that name is replaced.")
    file = forms.FileField(help_text="A flow in the seed's JSON format.")


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ["name", "brand", "is_active", "published_version", "updated_at"]
    list_filter = ["brand", "is_active"]
    list_select_related = ["brand", "published_version"]
    inlines = [FlowStateInline, FlowVersionInline]
    readonly_fields = ["published_version"]
    change_list_template = "admin/flows/flow/change_list.html"
    change_form_template = "admin/flows/flow/change_form.html"

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        try:
            version = flow_publish(form.instance, note=f"saved by {request.user}")
        except FlowInvalid as exc:  # the formset validated already; only a race gets here
            transaction.set_rollback(True)
            messages.error(request, "Not published: " + "; ".join(exc.errors))
            return
        messages.success(request, f"Published version {version.number}; new conversations use it now.")

    def get_urls(self) -> list[Any]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="flows_flow_import"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="flows_flow_export"),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = FlowImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                text = form.cleaned_data["file"].read().decode("utf-8")
                flow = flow_import(form.cleaned_data["brand"], parse_flow_file(text), name=form.cleaned_data["name"])
            except (FlowInvalid, UnicodeDecodeError) as exc:
                errors = exc.errors if isinstance(exc, FlowInvalid) else ["the file is not UTF-8 text"]
                for error in errors:
                    form.add_error("file", error)
            else:
                messages.success(request, f"Imported and published {flow}.")
                return HttpResponseRedirect(reverse("admin:flows_flow_change", args=[flow.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Import a flow",
            "opts": self.model._meta,
        }
        return render(request, "admin/flows/flow/import.html", context)

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        flow = get_object_or_404(Flow.objects.select_related("brand", "published_version"), pk=pk)
        if not self.has_view_permission(request, flow):
            return HttpResponseRedirect(reverse("admin:index"))
        response = HttpResponse(flow_export(flow), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{flow.brand.slug}-{flow.pk}.json"'
        return response


class AgentForm(forms.ModelForm):
    """Checks the configuration against the kind's typed config before it is saved."""

    class Meta:
        model = Agent
        fields = [
            "name",
            "kind",
            "brand",
            "is_active",
            "configuration",
            "welcome_message",
            "goodbye_message",
            "summary_message",
        ]
        help_texts = {
            "configuration": (
                'pattern: {"pattern": "…", "ignore_case": false, "negate": false} · '
                'keyword: {"keywords": ["…"], "match": "any"|"all", "whole_words": true, "ignore_case": true} · '
                'llm: {"question": "…?", "fallback_keywords": ["…"]}. '
                "Clients may override pattern/ignore_case/negate and keywords/match/whole_words/ignore_case "
                "per connection (auth.agent.configuration); see docs/agents.md."
            ),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        from conversations.agents.kinds import ConfigError, effective_config

        try:
            effective_config(str(cleaned.get("kind") or ""), cleaned.get("configuration"))
        except ConfigError as exc:
            self.add_error("configuration", str(exc))
        return cleaned


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ["name", "kind", "brand", "is_active", "updated_at"]
    list_filter = ["kind", "is_active", "brand"]
    list_select_related = ["brand"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "brand", "is_active"]}),
        ("What it decides", {"fields": ["configuration"]}),
        ("What it says", {"fields": ["welcome_message", "goodbye_message", "summary_message"]}),
    ]

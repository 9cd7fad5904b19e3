"""What staff author: brands, their catalogs, assistant flows and Socket.IO agents."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from django.db import models
from django.db.models import Q


class Brand(models.Model):
    class Provider(models.TextChoices):
        OFFLINE = "offline", "Built-in offline responder (no network)"
        OPENAI = "openai", "OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp)"

    slug = models.SlugField(unique=True, help_text="The brand_id clients use, e.g. techpro.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    welcome_message = models.CharField(max_length=500, blank=True)
    is_active = models.BooleanField(default=True)
    allowed_origins = models.TextField(
        blank=True,
        help_text="Browser origins allowed to connect, one per line. `*` matches anything in a "
        "part, e.g. http://localhost:* . Clients that send no Origin are always allowed.",
    )
    system_prompt = models.TextField(blank=True, help_text="Extra instructions for the model.")
    llm_provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.OFFLINE)
    llm_base_url = models.URLField(blank=True, help_text="Blank: LLM_BASE_URL from the environment.")
    llm_model = models.CharField(max_length=200, blank=True)
    llm_api_key = models.CharField(max_length=500, blank=True, help_text="Blank: LLM_API_KEY.")
    fallback_to_offline = models.BooleanField(
        default=True, help_text="Answer with the offline responder when the model fails."
    )
    max_message_length = models.PositiveIntegerField(default=1000)
    rate_limit_per_minute = models.PositiveIntegerField(default=10)
    daily_token_budget = models.PositiveIntegerField(default=0, help_text="0: no limit.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def welcome_text(self) -> str:
        return self.welcome_message or f"Welcome to {self.name}! How can I help you today?"

    def allows_origin(self, origin: str | None) -> bool:
        """Non-browser clients send no Origin and are allowed; browsers must be listed."""
        if not origin:
            return True
        patterns = [line.strip() for line in self.allowed_origins.splitlines() if line.strip()]
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in patterns)


class Product(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="products")
    external_id = models.CharField(max_length=100, help_text="The id clients see, e.g. laptop-002.")
    name = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True)
    price = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    features = models.JSONField(default=list, blank=True)
    specifications = models.JSONField(default=dict, blank=True)
    availability = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["brand", "category", "name"]
        constraints = [models.UniqueConstraint(fields=["brand", "external_id"], name="product_unique_per_brand")]
        # Retrieval checks the catalog's version (count, latest edit) on every query.
        indexes = [models.Index(fields=["brand", "updated_at"], name="product_brand_updated_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    def as_wire(self) -> dict[str, Any]:
        """The seed's product object."""
        return {
            "id": self.external_id,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": float(self.price),
            "features": list(self.features or []),
            "specifications": dict(self.specifications or {}),
            "availability": self.availability,
        }


class Flow(models.Model):
    """An assistant flow. Staff edit its states (the draft); saving publishes a FlowVersion.

    Conversations run on an immutable FlowVersion, so editing never changes a conversation
    that has already started.
    """

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="flows")
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True, help_text="The brand's assistant flow.")
    published_version = models.ForeignKey(
        "FlowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["brand", "name"]
        constraints = [
            models.UniqueConstraint(fields=["brand"], condition=Q(is_active=True), name="one_active_flow_per_brand")
        ]

    def __str__(self) -> str:
        return f"{self.brand.slug}: {self.name}"


class FlowState(models.Model):
    """One state of a flow's draft, in the seed's shape."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="states")
    position = models.PositiveIntegerField(default=0, help_text="Order; the first state starts.")
    name = models.CharField(max_length=200)
    send_request = models.JSONField(null=True, blank=True, help_text="sendRequest (JSON)")
    match_response = models.JSONField(null=True, blank=True, help_text="matchResponse (JSON)")
    next = models.CharField(max_length=200, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="Additional keys kept in the flow file (JSON object).")

    class Meta:
        ordering = ["flow", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["flow", "name"], name="state_name_unique_per_flow")]

    def __str__(self) -> str:
        return self.name

    def as_definition_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        if self.send_request is not None:
            entry["sendRequest"] = self.send_request
        if self.match_response is not None:
            entry["matchResponse"] = self.match_response
        if self.next:
            entry["next"] = self.next
        entry.update(self.extra or {})
        return entry


class FlowVersion(models.Model):
    """An immutable, validated snapshot of a flow that conversations run on."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition_json = models.TextField(help_text="The flow in the seed's JSON format.")
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["flow", "-number"]
        constraints = [models.UniqueConstraint(fields=["flow", "number"], name="version_number_unique")]

    def __str__(self) -> str:
        return f"{self.flow} v{self.number}"

    @property
    def definition(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.definition_json)
        return parsed


class Agent(models.Model):
    """A remote AI agent served over Socket.IO, selected by `auth.agent.name`."""

    class Kind(models.TextChoices):
        PATTERN = "pattern", "Pattern: result is whether the value matches a regular expression"
        KEYWORD = "keyword", "Keyword: result is whether the value contains any keyword"
        LLM = "llm", "LLM classifier: a yes/no question answered by the brand's model"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.PATTERN)
    brand = models.ForeignKey(
        Brand,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Whose transcripts hold the engagements, and whose model the LLM kind asks.",
    )
    configuration = models.JSONField(default=dict, blank=True)
    welcome_message = models.CharField(
        max_length=500, blank=True, help_text="Sent on a user's first connection; {name} is the user."
    )
    goodbye_message = models.CharField(max_length=500, blank=True, default="Goodbye!")
    summary_message = models.CharField(
        max_length=500,
        blank=True,
        help_text="Periodic summary when the count of true results changes; {count} is the count.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

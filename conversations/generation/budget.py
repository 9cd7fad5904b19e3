"""Daily generation budget per brand, counted in DailyUsage rows (tokens are streamed pieces)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import DailyUsage
from flows.models import Brand

BUDGET_SPENT_MESSAGE = {
    "en": "Sorry, our assistant has reached its limit for today. Please try again tomorrow.",
    "id": "Maaf, asisten kami sudah mencapai batas hari ini. Silakan coba lagi besok.",
}


def tokens_used_today(brand_id: int) -> int:
    usage = DailyUsage.objects.filter(brand_id=brand_id, day=timezone.localdate()).values_list("tokens", flat=True)
    return next(iter(usage), 0)


def budget_spent(brand: Brand) -> bool:
    """True when the brand has a daily token budget and today's use has reached it."""
    return brand.daily_token_budget > 0 and tokens_used_today(brand.pk) >= brand.daily_token_budget


def record_usage(brand_id: int, tokens: int, requests: int = 1) -> None:
    """Add to today's counters with an UPDATE … SET x = x + n, so concurrent workers never lose counts."""
    today = timezone.localdate()
    updated = DailyUsage.objects.filter(brand_id=brand_id, day=today).update(
        tokens=F("tokens") + tokens, requests=F("requests") + requests
    )
    if updated:
        return
    try:
        with transaction.atomic():
            DailyUsage.objects.create(brand_id=brand_id, day=today, tokens=tokens, requests=requests)
    except IntegrityError:  # another worker created today's row first
        DailyUsage.objects.filter(brand_id=brand_id, day=today).update(
            tokens=F("tokens") + tokens, requests=F("requests") + requests
        )

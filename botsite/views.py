"""Server status, health and the landing page."""

from __future__ import annotations

import time
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from botsite.env import redis_url_for_db
from flows.models import Brand

VERSION = "1.0.0"
_worker_check: dict[str, Any] = {"at": 0.0, "ok": False}


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _redis_ok() -> bool:
    try:
        return bool(redis.Redis.from_url(redis_url_for_db(settings.REDIS_URL, 0), socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _workers_ok() -> bool:
    """At least one Celery worker answers a ping (cached for a few seconds: it is a broadcast)."""
    now = time.monotonic()
    if now - _worker_check["at"] > 5:
        from botsite.celery import app

        try:
            _worker_check["ok"] = bool(app.control.ping(timeout=1.0))
        except Exception:
            _worker_check["ok"] = False
        _worker_check["at"] = now
    return bool(_worker_check["ok"])


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "redis": _redis_ok()}
    checks["workers"] = checks["redis"] and _workers_ok()
    healthy = all(checks.values())
    return JsonResponse({"status": "ok" if healthy else "unhealthy", "checks": checks}, status=200 if healthy else 503)


def _prefers_html(request: HttpRequest) -> bool:
    """Browsers list text/html first; programs send application/json, */* or nothing."""
    accepted = request.headers.get("Accept", "")
    html, json_at = accepted.find("text/html"), accepted.find("application/json")
    return html >= 0 and (json_at < 0 or html < json_at)


def index(request: HttpRequest) -> HttpResponse:
    """The seed's status JSON for programs; the landing page for browsers."""
    brands = list(Brand.objects.filter(is_active=True).values("slug", "name", "description"))
    if _prefers_html(request):
        return render(request, "index.html", {"brands": brands})
    return JsonResponse(
        {
            "status": "running",
            "message": "Multi-brand chatbot API",
            "version": VERSION,
            "timestamp": timezone.now().isoformat(),
            "active_brands": len(brands),
            "endpoints": {
                "assistant": "/ws/assistant/{brand_id}/",
                "chat": "/ws/chat/{brand_id}",
                "sessions": "/sessions/{user_id}/messages",
                "socketio": "/socket.io/",
                "brands": "/brands/active",
                "docs": "/docs",
                "health": "/healthz",
            },
        }
    )


def brands_active(request: HttpRequest) -> JsonResponse:
    brands = [
        {"id": b.slug, "name": b.name, "description": b.description, "welcome_message": b.welcome_text}
        for b in Brand.objects.filter(is_active=True)
    ]
    return JsonResponse(brands, safe=False)

"""HTTP + Server-Sent Events sessions API (the fsm-chatbot seed). Filled in by the sessions work."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF errors as `{"detail": ..., "error": ...}` JSON, always."""
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"]), **response.data}
    return response


urlpatterns: list[Any] = []

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

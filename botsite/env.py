"""Tiny helpers that read settings from the environment and fail loudly on bad values."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str | None:
    """A string setting; `NAME_FILE` (a path, for container secrets) wins over `NAME`."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _base_db(url: str) -> int:
    parts = urlparse(url)
    if parts.scheme == "unix":
        return int(parse_qs(parts.query).get("db", ["0"])[0])
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0


def redis_url_for_db(url: str, offset: int) -> str:
    """The same Redis server as `url`, logical database (the URL's database + `offset`).

    The channel layer, the Celery broker and the cache each get their own database, counted
    from the one REDIS_URL names, so two deployments can share a server (`/0` and `/4`, say).
    """
    db = _base_db(url) + offset
    parts = urlparse(url)
    if parts.scheme == "unix":
        query = parse_qs(parts.query)
        query["db"] = [str(db)]
        # urlunparse would drop the empty host and give `unix:/path`, which redis-py refuses.
        return f"unix://{parts.path}?{urlencode(query, doseq=True)}"
    return urlunparse(parts._replace(path=f"/{db}"))


def celery_url_for_db(url: str, offset: int) -> str:
    """Kombu spells a unix-socket Redis as `redis+socket://PATH?virtual_host=N`."""
    parts = urlparse(url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}?virtual_host={_base_db(url) + offset}"
    return redis_url_for_db(url, offset)

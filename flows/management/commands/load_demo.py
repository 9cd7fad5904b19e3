"""Demo data, loaded idempotently by `make run`: brand techpro with the seed's language flow,
its product catalog, the seed's emoji agent, and a staff account."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from flows.models import Brand, Flow
from flows.services import flow_import, parse_flow_file

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"


class Command(BaseCommand):
    help = "Create the demo brand, flow, catalog, agent and an admin account (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            brand, created = Brand.objects.get_or_create(
                slug="techpro",
                defaults={
                    "name": "TechPro Solutions",
                    "description": "Laptops, monitors and accessories for work and play.",
                    "welcome_message": "Welcome to TechPro Solutions! How can I help you today?",
                    "allowed_origins": "http://localhost:*\nhttp://127.0.0.1:*\nhttps://localhost:*\nhttps://127.0.0.1:*",
                },
            )
            if not Flow.objects.filter(brand=brand).exists():
                definition = parse_flow_file((DEMO_DIR / "language-flow.json").read_text())
                flow_import(brand, definition, name="Language flow")
            from flows.demo import extras

            extras.load(brand)
        self.stdout.write(f"demo brand: {brand.slug} ({'created' if created else 'already there'})")
        self._ensure_admin()

    def _ensure_admin(self) -> None:
        user_model = get_user_model()
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        if not user_model.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "admin@example.com", password)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        if password_file.exists():
            self.stdout.write(f"staff sign-in: /admin/ as `admin`, password in {password_file}")

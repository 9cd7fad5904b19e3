"""Import a brand's products from a CSV or JSON file: `manage.py import_products FILE --brand B`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from flows.catalog_import import ImportInvalid, products_import_file
from flows.models import Brand


class Command(BaseCommand):
    help = "Create or update a brand's products from CSV or JSON (the seed's product fields)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="A .csv or .json file")
        parser.add_argument("--brand", required=True, help="The brand's slug (brand_id), e.g. techpro")

    def handle(self, *args: Any, **options: Any) -> None:
        brand = Brand.objects.filter(slug=options["brand"]).first()
        if brand is None:
            raise CommandError(f"no brand {options['brand']!r}")
        path = Path(options["file"])
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        try:
            result = products_import_file(brand, content, path.name)
        except ImportInvalid as exc:
            raise CommandError("nothing imported:\n  " + "\n  ".join(exc.errors)) from None
        self.stdout.write(f"{brand.slug}: {result}")

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.engine import FlowInvalid
from flows.models import Brand
from flows.services import flow_import, parse_flow_file


class Command(BaseCommand):
    help = "Import a flow file in the seed's JSON format and publish it as the brand's active flow."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file")
        parser.add_argument("--brand", required=True, help="brand slug, e.g. techpro")
        parser.add_argument("--name", default="Assistant")

    def handle(self, *args: Any, **options: Any) -> None:
        brand = Brand.objects.filter(slug=options["brand"]).first()
        if brand is None:
            raise CommandError(f"no brand {options['brand']!r}")
        try:
            flow = flow_import(brand, parse_flow_file(Path(options["file"]).read_text()), name=options["name"])
        except FlowInvalid as exc:
            raise CommandError("the flow is not valid:\n  " + "\n  ".join(exc.errors)) from exc
        assert flow.published_version is not None
        self.stdout.write(f"published {flow} v{flow.published_version.number}")

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows.models import Flow
from flows.services import flow_export


class Command(BaseCommand):
    help = "Print a brand's flow in the seed's JSON format (the active flow unless --name)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--brand", default="techpro")
        parser.add_argument("--name", help="flow name; default: the brand's active flow")

    def handle(self, *args: Any, **options: Any) -> None:
        flows = Flow.objects.filter(brand__slug=options["brand"]).select_related("published_version")
        flow = flows.filter(name=options["name"]).first() if options["name"] else flows.filter(is_active=True).first()
        if flow is None:
            raise CommandError("no such flow")
        self.stdout.write(flow_export(flow), ending="")

"""Print stored messages as JSON lines, like the seed's `fluvio consume bot-assist-messages`.

manage.py consume_messages --offset -5            # the last five messages
manage.py consume_messages --brand techpro --follow
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from conversations.models import Message

LOOK_BACK = 200


def record(message: Message) -> dict[str, Any]:
    """The seed's record (`sid`, `payload` {kind Request/Response, message}, `timestamp`) plus
    where it belongs. `sid` is the conversation id: the visitor's cookie is never printed."""
    return {
        "sid": str(message.conversation_id),
        "payload": {
            "kind": "Request" if message.direction == Message.Direction.OUT else "Response",
            "message": message.payload,
        },
        "timestamp": message.created_at.isoformat(timespec="milliseconds").replace("+00:00", ""),
        "seq": message.seq,
        "brand": message.conversation.brand.slug,
        "channel": message.conversation.channel,
        "offset": message.pk,
    }


class Command(BaseCommand):
    help = "Print stored messages as JSON lines; --offset -N for the last N, --follow to keep going."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--brand", help="only this brand's messages (slug)")
        parser.add_argument(
            "--offset", default="0", help="N: start at offset N (0 = the beginning); -N: the last N messages"
        )
        parser.add_argument("--follow", "-f", action="store_true", help="wait for new messages")
        parser.add_argument("--interval", type=float, default=0.5, help="poll interval with --follow")
        parser.add_argument("--timeout", type=float, default=0, help="with --follow: stop after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            offset = int(options["offset"])
        except ValueError as exc:
            raise CommandError("--offset must be an integer") from exc
        messages = Message.objects.filter(seq__isnull=False).select_related("conversation__brand").order_by("pk")
        if options["brand"]:
            messages = messages.filter(conversation__brand__slug=options["brand"])
        if offset < 0:
            tail = list(messages.order_by("-pk")[:-offset])
            last_pk = tail[-1].pk - 1 if tail else 0
        else:
            last_pk = offset - 1 if offset > 0 else 0
        # Transactions can commit out of id order, so --follow looks back a little and skips
        # what it already printed.
        printed: set[int] = set()
        look_back = 0
        deadline = time.monotonic() + options["timeout"] if options["timeout"] else None
        while True:
            batch = [m for m in messages.filter(pk__gt=last_pk - look_back)[:1000] if m.pk not in printed]
            for message in batch:
                self.stdout.write(json.dumps(record(message), ensure_ascii=False))
                printed.add(message.pk)
                last_pk = max(last_pk, message.pk)
            if len(printed) > 4 * LOOK_BACK:
                printed = {pk for pk in printed if pk > last_pk - LOOK_BACK}
            self.stdout.flush()
            if not options["follow"]:
                if len(batch) < 1000:
                    return
                continue
            look_back = LOOK_BACK
            if deadline is not None and time.monotonic() > deadline:
                return
            if not batch:
                time.sleep(options["interval"])

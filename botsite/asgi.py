"""One ASGI application: Django HTTP (with async SSE views), Channels WebSockets, Socket.IO."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from botsite.daphne_headers import install as install_daphne_headers  # noqa: E402
from conversations.protocols.routing import websocket_urlpatterns  # noqa: E402

install_daphne_headers()

channels_app = ProtocolTypeRouter({"http": django_http, "websocket": URLRouter(websocket_urlpatterns)})


from conversations.protocols.agents import socketio_app  # noqa: E402

# Socket.IO answers /socket.io/; every other path and protocol goes to Channels.
application = socketio_app(other_asgi_app=channels_app)

# A server holding thousands of sockets keeps hundreds of thousands of long-lived objects, and
# the collector's default thresholds walk the young ones after every few hundred allocations:
# at 5,000 sockets that was ~25 % of daphne's CPU per flow step (bench, docs/performance.md).
# What exists after start-up is never garbage (`freeze`), and collections run less often.
gc.freeze()
gc.set_threshold(20_000, 20, 20)

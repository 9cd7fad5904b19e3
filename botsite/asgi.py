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

# What the first visitors' messages would otherwise import and build, each paying for it (the
# tasks, Celery's result and event modules, the app's finalization): done now, and frozen below.
import django.db.models.sql.compiler  # noqa: E402, F401
from channels.layers import get_channel_layer  # noqa: E402

import conversations.tasks  # noqa: E402, F401
from botsite.celery import app as celery_app  # noqa: E402

celery_app.finalize(auto=True)
celery_app.backend, celery_app.events  # noqa: B018 (built on first use)
get_channel_layer()  # no connection yet: only the layer's objects

# What exists once the application is loaded is never garbage: `freeze` keeps the collector from
# walking it again at every full collection. The thresholds stay at their defaults: raising them
# (tried: 20,000, 20, 20) saved little CPU at 1,000 conversations and let daphne's memory grow
# ~1.4 GiB/h in the soak, where the defaults keep it flat (docs/performance.md, "Soak").
gc.freeze()

"""One ASGI application: Django HTTP (with async SSE views), Channels WebSockets, Socket.IO."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402 - settings first

django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from botsite.daphne_headers import install as install_daphne_headers  # noqa: E402
from conversations.protocols.routing import websocket_urlpatterns  # noqa: E402

install_daphne_headers()

channels_app = ProtocolTypeRouter({"http": django_http, "websocket": URLRouter(websocket_urlpatterns)})


def _with_socketio(app):  # type: ignore[no-untyped-def]
    """Socket.IO answers /socket.io/; everything else goes to Channels."""
    try:
        from conversations.protocols.agents import socketio_app
    except ImportError:
        return app
    return socketio_app(other_asgi_app=app)


application = _with_socketio(channels_app)

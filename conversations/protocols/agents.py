"""Remote AI agents over Socket.IO (seeds/remote-ai-agent-socketio.md), at /socket.io/.

Thin: each handler parses the seed's payload (conversations.agents.wire), calls one service
(conversations.agents.services) and emits. Every emit goes through the Redis manager, so a room
reaches its sockets on any daphne process, and workers emit to the same rooms
(conversations.agents.emit).

- `connect`: no `auth.agent` → accepted and ignored (no room, nothing emitted, events dropped).
  An unknown agent or an unusable `auth.user` → refused (`connect_error` with
  `{message, data: {code}}`). Otherwise the socket joins the room `str(auth.user.id)`; the
  welcome interjection goes to that room only when the engagement is new.
- `request {key, value, annotations}` → `response {...payload, result}` to the room. Bad input,
  floods, agent failures → an `error {code, message, event, key?}` to this socket only.
- `end` → the goodbye interjection to the room; the engagement is over and later requests get
  nothing.
- `disconnect` → the socket leaves its room; the engagement stays open.
A client that asks for acknowledgements gets `{"status": "ok" | "ignored" | "error"}`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

import socketio
from django.conf import settings

from conversations.agents import emit, services, wire
from conversations.agents.kinds import AgentFailed
from conversations.protocols.common import RateLimiter, db_async

logger = logging.getLogger(__name__)

# Per socket, at most this many requests a minute; more get `rate_limited`.
REQUESTS_PER_MINUTE = int(getattr(settings, "AGENT_REQUESTS_PER_MINUTE", 120))
MAX_VALUE_CHARS = int(getattr(settings, "AGENT_MAX_VALUE_CHARS", wire.MAX_VALUE_CHARS))
ALLOWED_ORIGINS: list[str] = list(
    getattr(settings, "AGENT_ALLOWED_ORIGINS", ["http://localhost:*", "http://127.0.0.1:*"])
)


def origin_allowed(origin: str | None) -> bool:
    """Browsers must come from AGENT_ALLOWED_ORIGINS (`*` wildcards); clients with no Origin may."""
    if not origin:
        return True
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in ALLOWED_ORIGINS)


sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=emit.server_manager(),
    # A callable, never []: an empty list would switch the origin check off entirely.
    cors_allowed_origins=origin_allowed,
    logger=False,
    engineio_logger=False,
)


@dataclass
class SocketState:
    engagement: services.Engagement
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(REQUESTS_PER_MINUTE, 60.0))
    # Requests of one socket are answered in the order they came.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# Sockets with an active agent, on this process. Ignored sockets are not here.
_sockets: dict[str, SocketState] = {}


async def _error(sid: str, error: wire.WireError, event: str, key: str | None = None) -> dict[str, Any]:
    await sio.emit("error", wire.error_payload(error, event, key), to=sid)
    return {"status": "error", "code": error.code}


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
    try:
        parsed = wire.parse_auth(auth)
    except wire.WireError as exc:
        raise socketio.exceptions.ConnectionRefusedError(exc.message, {"code": exc.code}) from exc
    if parsed is None:
        return True  # the seed: connections without auth.agent are ignored
    try:
        connected = await db_async(services.engagement_connect)(parsed)
    except services.AgentUnavailable as exc:
        raise socketio.exceptions.ConnectionRefusedError(str(exc), {"code": "unknown_agent"}) from exc
    await sio.enter_room(sid, parsed.user_id)
    _sockets[sid] = SocketState(connected.engagement)
    if connected.welcome is not None or connected.config_error is not None:
        # After the handler returns: the CONNECT packet must reach the client first.
        sio.start_background_task(_after_connect, sid, connected)
    return True


async def _after_connect(sid: str, connected: services.Connected) -> None:
    await asyncio.sleep(0)
    if connected.config_error is not None:
        await _error(sid, wire.WireError("bad_configuration", connected.config_error), "connect")
    if connected.welcome is not None:
        await sio.emit("interjection", connected.welcome, room=connected.engagement.room)


@sio.event
async def request(sid: str, payload: Any = None) -> dict[str, Any]:
    state = _sockets.get(sid)
    if state is None:
        return {"status": "ignored"}
    key = payload.get("key") if isinstance(payload, dict) and isinstance(payload.get("key"), str) else None
    if not state.limiter.allow():
        return await _error(sid, wire.WireError("rate_limited", "too many requests; slow down"), "request", key)
    try:
        parsed = wire.parse_request(payload, max_value_chars=MAX_VALUE_CHARS)
    except wire.WireError as exc:
        return await _error(sid, exc, "request", key)
    async with state.lock:
        try:
            response = await services.engagement_answer(state.engagement, parsed)
        except AgentFailed as exc:
            return await _error(sid, wire.WireError("agent_failed", str(exc)), "request", key)
        if response is None:
            return {"status": "ignored"}  # the engagement has ended
        await sio.emit("response", response, room=state.engagement.room)
    return {"status": "ok", "result": response["result"]}


@sio.event
async def end(sid: str, auth: Any = None) -> dict[str, Any]:
    # The payload repeats the handshake's auth; this socket's own engagement is the one ended.
    state = _sockets.get(sid)
    if state is None:
        return {"status": "ignored"}
    async with state.lock:
        goodbye = await db_async(services.engagement_end)(state.engagement.conversation_id)
        if goodbye is not None:
            await sio.emit("interjection", goodbye, room=state.engagement.room)
    return {"status": "ok"}


@sio.event
async def disconnect(sid: str, reason: Any = None) -> None:
    state = _sockets.pop(sid, None)
    if state is not None:
        await sio.leave_room(sid, state.engagement.room)


def socketio_app(other_asgi_app: Any) -> socketio.ASGIApp:
    """/socket.io/ answered here; every other path and protocol goes to `other_asgi_app`."""
    return socketio.ASGIApp(sio, other_asgi_app=other_asgi_app, socketio_path="socket.io")

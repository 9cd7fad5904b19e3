"""A test client for the assistant socket that speaks like the seed's assistant.js."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from botsite.asgi import channels_app


class AssistantClient:
    def __init__(
        self, path: str = "/ws/assistant/techpro/", cookie: str | None = None, origin: str | None = None
    ) -> None:
        headers = []
        if cookie:
            headers.append((b"cookie", f"Fluvio-Bot-Assistant={cookie}".encode()))
        if origin:
            headers.append((b"origin", origin.encode()))
        self.communicator = WebsocketCommunicator(channels_app, path, headers=headers)
        self.sid: str | None = None
        self.set_cookie: str | None = None

    async def connect(self) -> None:
        connected, _ = await self.communicator.connect(timeout=10)
        assert connected
        session = await self.receive()
        if session.get("kind") == "Session":
            self.sid = session["sid"]
        else:
            self.first = session

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def receive_until(self, kind: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Messages up to and including the first of `kind`."""
        received = []
        while True:
            message = await self.receive(timeout)
            received.append(message)
            if message.get("kind") == kind:
                return received

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.communicator.send_to(text_data=message if isinstance(message, str) else json.dumps(message))

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.communicator.disconnect()

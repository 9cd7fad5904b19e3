"""A test client for `/ws/chat/{brand_id}` that behaves like the seed's `ChatbotWebSocket` class:
the same messages, in the same order, and the same state (conversationId, currentMessage)."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from botsite.asgi import channels_app


class ChatbotWebSocket:
    def __init__(self, brand_id: str = "techpro", *, path: str | None = None, origin: str | None = None) -> None:
        headers = [(b"origin", origin.encode())] if origin else []
        self.communicator = WebsocketCommunicator(channels_app, path or f"/ws/chat/{brand_id}", headers=headers)
        self.conversation_id: str | None = None
        self.current_message = ""
        self.received: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None

    async def connect(self) -> dict[str, Any]:
        """Connects and returns the first frame (the seed's onWelcome gets it)."""
        connected, _ = await self.communicator.connect(timeout=10)
        assert connected
        first = await self.receive()
        if first["type"] == "welcome":
            self.welcome = first["data"]
        return first

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        message = json.loads(await self.communicator.receive_from(timeout=timeout))
        self.received.append(message)
        # The seed's handleMessage: chunks append and carry the conversation id.
        if message["type"] == "chunk":
            self.current_message += message["data"]["content"]
            self.conversation_id = message["data"]["conversation_id"]
        elif message["type"] == "complete":
            self.conversation_id = message["data"]["conversation_id"]
        return message

    async def send_message(self, text: str, is_voice: bool = False, **extra: Any) -> None:
        """The seed's sendMessage: the current conversationId (null at first) and voice."""
        data = {"message": text, "conversation_id": self.conversation_id, "voice": is_voice, **extra}
        await self.send({"type": "chat", "data": data})
        self.current_message = ""

    async def send_ping(self) -> None:
        await self.send({"type": "ping", "data": {}})

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.communicator.send_to(text_data=message if isinstance(message, str) else json.dumps(message))

    async def answer(self, timeout: float = 15) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Frames up to the `complete` of the current answer: (chunks, complete)."""
        chunks = []
        while True:
            message = await self.receive(timeout)
            if message["type"] == "chunk":
                chunks.append(message)
            elif message["type"] == "complete":
                return chunks, message
            else:
                raise AssertionError(f"unexpected frame while answering: {message}")

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        message = await self.receive(timeout)
        assert message["type"] == kind, message
        return message

    async def closed(self, timeout: float = 5) -> bool:
        output = await self.communicator.receive_output(timeout=timeout)
        return bool(output["type"] == "websocket.close")

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.communicator.disconnect()

"""A minimal brand-chat client: python docs/examples/brand_chat_client.py [brand_id] [ws://host:port]

Needs `pip install websockets`. Type a message and press Enter; start a line with `!voice ` for a
one-sentence answer. The conversation continues until you quit (Ctrl-D).
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets


async def chat(brand_id: str = "techpro", base: str = "ws://localhost:8000") -> None:
    async with websockets.connect(f"{base}/ws/chat/{brand_id}") as socket:
        welcome = json.loads(await socket.recv())
        if welcome["type"] != "welcome":
            print("error:", welcome["data"]["message"])
            return
        print(f"[{welcome['data']['brand_name']}] {welcome['data']['message']}")
        conversation_id = None
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            text, voice = line.strip(), False
            if text.startswith("!voice "):
                text, voice = text[len("!voice ") :], True
            if not text:
                continue
            await socket.send(json.dumps({"type": "chat", "data": {
                "message": text, "conversation_id": conversation_id, "voice": voice,
            }}))  # fmt: skip
            while True:
                message = json.loads(await socket.recv())
                data = message["data"]
                if message["type"] == "chunk":
                    print(data["content"], end="", flush=True)
                    conversation_id = data["conversation_id"]
                elif message["type"] == "complete":
                    conversation_id = data["conversation_id"]
                    print()
                    for product in data["suggested_products"]:
                        stock = "in stock" if product["availability"] else "out of stock"
                        print(f"  - {product['name']}: IDR {product['price']:,.0f} ({stock})")
                    if data["confidence_score"] is not None:
                        print(f"  match confidence: {data['confidence_score']:.0%}")
                    break
                elif message["type"] == "error":
                    print("error:", data["message"])
                    break


if __name__ == "__main__":
    asyncio.run(chat(*sys.argv[1:3]))

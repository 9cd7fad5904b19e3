"""The Redis log of streamed pieces, which late readers and redelivered tasks read back."""

import uuid

from conversations.generation import streams


async def test_pieces_written_by_a_worker_read_back_in_order_from_async_code():
    conversation_id = uuid.uuid4()
    stream_id = streams.stream_id_for(conversation_id, 3, 0)
    with streams.sync_client() as client:
        client.rpush(streams.tokens_key(conversation_id, stream_id), "Hello", " there", "\n!")
    assert await streams.read_tokens_async(conversation_id, stream_id) == ["Hello", " there", "\n!"]
    assert streams.read_tokens(conversation_id, stream_id) == ["Hello", " there", "\n!"]
    assert await streams.read_tokens_async(conversation_id, "nothing-here") == []

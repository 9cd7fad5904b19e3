"""The sockets' channel-layer messages go straight into their input queues (common._Inbox), beside
any plain `channel_layer.receive` (the SSE stream uses one): each gets its own messages, and a
socket that closes leaves nothing behind in the layer."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import services
from conversations.events import delta_event
from conversations.models import Conversation
from conversations.publish import group_name, publish_async
from tests.protocols.assistant_client import AssistantClient

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def conversation_of(sid: str) -> Conversation:
    return Conversation.objects.get(visitor_key=services.visitor_key_for(sid))


async def test_sockets_and_a_plain_receiver_share_the_layer(techpro, worker):
    layer = get_channel_layer()
    plain = await layer.new_channel()
    plain_receive = asyncio.create_task(layer.receive(plain))
    first, second = AssistantClient(), AssistantClient()
    for client in (first, second):
        await client.connect()
        await client.receive_until("ChoiceRequest")
    one, two = await conversation_of(first.sid), await conversation_of(second.sid)

    await publish_async(one.pk, [delta_event({group_name(one.pk): [["s1", 0, ["to one"]]]})])
    assert await first.receive() == {"kind": "BotStream", "streamId": "s1", "delta": "to one"}
    assert await second.nothing_more()
    await layer.send(plain, {"type": "plain.message", "text": "to the plain receiver"})
    assert (await asyncio.wait_for(plain_receive, 10))["text"] == "to the plain receiver"

    await first.close()
    await publish_async(two.pk, [delta_event({group_name(two.pk): [["s2", 0, ["to two"]]]})])
    assert await second.receive() == {"kind": "BotStream", "streamId": "s2", "delta": "to two"}
    await second.close()
    third = AssistantClient()
    await third.connect()
    await third.receive_until("ChoiceRequest")
    three = await conversation_of(third.sid)
    plain_receive = asyncio.create_task(layer.receive(plain))
    await publish_async(three.pk, [delta_event({group_name(three.pk): [["s3", 0, ["to three"]]]})])
    await layer.send(plain, {"type": "plain.message", "text": "again"})
    assert await third.receive() == {"kind": "BotStream", "streamId": "s3", "delta": "to three"}
    assert (await asyncio.wait_for(plain_receive, 10))["text"] == "again"
    await third.close()
    await asyncio.sleep(0.5)  # the server side of the closed sockets finishes
    loop_layer = layer._get_layer()
    assert set(loop_layer.channels) == {plain}
    assert not loop_layer.groups

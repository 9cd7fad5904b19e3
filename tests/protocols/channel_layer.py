"""Reaching into the channel layer to simulate lost live events."""

from __future__ import annotations

import uuid

from channels.layers import get_channel_layer

from conversations.publish import group_name


async def take_sockets_out_of_group(conversation_id: uuid.UUID) -> None:
    """Take every socket of this process out of the conversation's group, as if the live events
    sent to it were lost (a Redis restart, an overloaded subscriber)."""
    layer = get_channel_layer()
    group = group_name(conversation_id)
    loop_layer = layer._get_layer()  # the pub/sub layer keeps group membership per event loop
    members = list(loop_layer.groups.get(loop_layer._get_group_channel_name(group), ()))
    assert members, "the consumer should be in its conversation's group"
    for channel in members:
        await layer.group_discard(group, channel)

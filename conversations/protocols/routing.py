from django.urls import re_path

from conversations.protocols.assistant import AssistantConsumer
from conversations.protocols.brand_chat import BrandChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/assistant/(?P<brand_id>[^/]+)/?$", AssistantConsumer.as_asgi()),
    re_path(r"^ws/chat/(?P<brand_id>[^/]+)/?$", BrandChatConsumer.as_asgi()),
]

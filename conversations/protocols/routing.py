from django.urls import re_path

from conversations.protocols.assistant import AssistantConsumer

websocket_urlpatterns = [
    re_path(r"^ws/assistant/(?P<brand_id>[^/]+)/?$", AssistantConsumer.as_asgi()),
]

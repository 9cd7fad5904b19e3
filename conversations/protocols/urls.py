from conversations.protocols import sessions_api

urlpatterns: list = [*sessions_api.urlpatterns]

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from botsite import views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("brands/active", views.brands_active, name="brands-active"),
    path("admin/", admin.site.urls),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="swagger-ui"),
    path("redoc", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    path("", include("conversations.protocols.urls")),
]

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from burki.views import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("calls.urls")),
    path("", include("billing.urls")),
    path("", include("webhooks.urls")),
]

handler400 = "burki.exceptions.json_bad_request"
handler403 = "burki.exceptions.json_permission_denied"
handler404 = "burki.exceptions.json_not_found"
handler500 = "burki.exceptions.json_server_error"

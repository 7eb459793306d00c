from django.contrib import admin
from django.urls import include, path

from burki.views import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health, name="health"),
    path("", include("calls.urls")),
    path("", include("billing.urls")),
]

handler400 = "burki.exceptions.json_bad_request"
handler403 = "burki.exceptions.json_permission_denied"
handler404 = "burki.exceptions.json_not_found"
handler500 = "burki.exceptions.json_server_error"

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from burki.exceptions import not_found
from burki.views import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("admin", RedirectView.as_view(url="/admin/")),
    path("health", health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("calls.urls")),
    path("", include("billing.urls")),
    path("", include("webhooks.urls")),
    path("", include("campaigns.urls")),
    # Every other path is the API's 404, in DEBUG too (Django's debug page would list the URLs).
    # (No CSRF check: it answers every method, and a POST to nowhere is a 404, not a 403.)
    re_path(r"", csrf_exempt(not_found)),
]

handler400 = "burki.exceptions.bad_request"
handler403 = "burki.exceptions.permission_denied"
handler404 = "burki.exceptions.not_found"
handler500 = "burki.exceptions.server_error"

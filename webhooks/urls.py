from django.urls import path

from webhooks import apis

app_name = "webhooks"

urlpatterns = [
    path("webhook-endpoints", apis.EndpointListCreateApi.as_view(), name="endpoints"),
    path(
        "webhook-endpoints/<uuid:endpoint_id>",
        apis.EndpointDetailApi.as_view(),
        name="endpoint",
    ),
    path(
        "webhook-endpoints/<uuid:endpoint_id>/rotate-secret",
        apis.EndpointRotateSecretApi.as_view(),
        name="endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<uuid:endpoint_id>/deliveries",
        apis.EndpointDeliveriesApi.as_view(),
        name="endpoint-deliveries",
    ),
    path(
        "webhook-events/<uuid:event_id>/redeliver",
        apis.EventRedeliverApi.as_view(),
        name="event-redeliver",
    ),
]

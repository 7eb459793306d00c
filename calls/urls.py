from django.urls import path

from calls import apis, webhooks

app_name = "calls"

urlpatterns = [
    path("calls/initiate", apis.InitiateCallApi.as_view(), name="initiate"),
    path("calls", apis.CallListApi.as_view(), name="list"),
    path("calls/<uuid:call_id>", apis.CallDetailApi.as_view(), name="detail"),
    path("calls/<uuid:call_id>/hangup", apis.CallHangUpApi.as_view(), name="hangup"),
    path("calls/<uuid:call_id>/transfer", apis.CallTransferApi.as_view(), name="transfer"),
    path(
        "webhooks/calls/<uuid:call_id>/answer",
        webhooks.CallAnswerWebhookApi.as_view(),
        name="webhook-answer",
    ),
    path(
        "webhooks/calls/<uuid:call_id>/status",
        webhooks.CallStatusWebhookApi.as_view(),
        name="webhook-status",
    ),
]

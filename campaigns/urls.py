from django.urls import path

from campaigns import apis

app_name = "campaigns"

urlpatterns = [
    path("campaigns", apis.CampaignListApi.as_view(), name="list"),
    path("campaigns/<uuid:campaign_id>", apis.CampaignDetailApi.as_view(), name="detail"),
    path(
        "campaigns/<uuid:campaign_id>/recipients",
        apis.CampaignRecipientsApi.as_view(),
        name="recipients",
    ),
    path("campaigns/<uuid:campaign_id>/start", apis.CampaignStartApi.as_view(), name="start"),
    path("campaigns/<uuid:campaign_id>/pause", apis.CampaignPauseApi.as_view(), name="pause"),
    path("campaigns/<uuid:campaign_id>/resume", apis.CampaignResumeApi.as_view(), name="resume"),
    path("campaigns/<uuid:campaign_id>/cancel", apis.CampaignCancelApi.as_view(), name="cancel"),
    path("do-not-call", apis.DoNotCallListApi.as_view(), name="do-not-call"),
    path("do-not-call/<str:number>", apis.DoNotCallDetailApi.as_view(), name="do-not-call-detail"),
]

from django.urls import path

from billing import apis

app_name = "billing"

urlpatterns = [
    path("billing/balance", apis.BalanceApi.as_view(), name="balance"),
    path("billing/ledger", apis.LedgerApi.as_view(), name="ledger"),
]

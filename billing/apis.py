from __future__ import annotations

from django.conf import settings
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import LedgerEntry
from billing.selectors import balance_for_organization, ledger_for_organization
from burki.pagination import NewestFirstCursorPagination


class BalanceApi(APIView):
    """GET /billing/balance: your organization's money, in integer minor units."""

    class OutputSerializer(serializers.Serializer):
        balance_cents = serializers.IntegerField()
        reserved_cents = serializers.IntegerField(help_text="Held for calls in progress.")
        available_cents = serializers.IntegerField(help_text="What new calls can spend.")
        currency = serializers.CharField()
        rate_cents_per_minute = serializers.IntegerField()

    def get(self, request: Request) -> Response:
        organization = request.auth.organization
        balance = balance_for_organization(organization_id=organization.pk)
        balance_cents, held_cents = (
            (balance.balance_cents, balance.held_cents) if balance else (0, 0)
        )
        data = {
            "balance_cents": balance_cents,
            "reserved_cents": held_cents,
            "available_cents": balance_cents - held_cents,
            "currency": settings.BILLING_CURRENCY,
            "rate_cents_per_minute": organization.effective_rate_cents_per_minute,
        }
        return Response(self.OutputSerializer(data).data)


class LedgerPagination(NewestFirstCursorPagination):
    items = "Entries"


class LedgerApi(APIView):
    """GET /billing/ledger: every change to your balance, newest first."""

    class OutputSerializer(serializers.ModelSerializer):
        reserved_change_cents = serializers.IntegerField(source="held_change_cents")
        reserved_after_cents = serializers.IntegerField(source="held_after_cents")
        call_id = serializers.UUIDField(allow_null=True)

        class Meta:
            model = LedgerEntry
            fields = [
                "id",
                "kind",
                "amount_cents",
                "reserved_change_cents",
                "balance_after_cents",
                "reserved_after_cents",
                "call_id",
                "memo",
                "created_at",
            ]

    def get(self, request: Request) -> Response:
        entries = ledger_for_organization(organization_id=request.auth.organization_id)
        paginator = LedgerPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import openapi
from billing.models import LedgerEntry
from billing.selectors import balance_for_organization, ledger_for_organization
from burki.authentication import request_api_key
from burki.pagination import NewestFirstCursorPagination


class BalanceApi(APIView):
    """GET /billing/balance: your organization's money, in integer minor units."""

    @extend_schema_serializer(component_name="Balance")
    class OutputSerializer(serializers.Serializer):
        balance_cents = serializers.IntegerField(
            help_text="Everything paid in, less everything charged."
        )
        reserved_cents = serializers.IntegerField(help_text="Held for calls in progress.")
        available_cents = serializers.IntegerField(help_text="What new calls can spend.")
        currency = serializers.CharField(help_text="ISO 4217 code of every amount, e.g. `USD`.")
        rate_cents_per_minute = serializers.IntegerField(
            help_text="What a minute of a call costs your organization."
        )

    @openapi.retrieve_balance(response=OutputSerializer)
    def get(self, request: Request) -> Response:
        organization = request_api_key(request).organization
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

    @extend_schema_serializer(component_name="LedgerEntry")
    class OutputSerializer(serializers.ModelSerializer):
        reserved_change_cents = serializers.IntegerField(
            source="held_change_cents",
            read_only=True,
            help_text="Signed change to `reserved_cents`.",
        )
        reserved_after_cents = serializers.IntegerField(
            source="held_after_cents",
            read_only=True,
            help_text="`reserved_cents` after this entry.",
        )

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
            # Output only; read-only fields are also what the schema lists as always present.
            read_only_fields = fields
            extra_kwargs = {
                "amount_cents": {"help_text": "Signed change to `balance_cents`."},
                "balance_after_cents": {"help_text": "`balance_cents` after this entry."},
                "call_id": {
                    "help_text": "The call this entry holds, charges or releases money for."
                },
            }

    pagination_class = LedgerPagination  # read by the schema; get() pages with it too

    @openapi.list_ledger(item=OutputSerializer)
    def get(self, request: Request) -> Response:
        entries = ledger_for_organization(organization_id=request_api_key(request).organization_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

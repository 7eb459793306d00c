from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from billing.errors import BillingError
from billing.models import Balance, LedgerEntry
from billing.services import balance_adjust, balance_top_up


class TopUpForm(forms.Form):
    amount_cents = forms.IntegerField(
        label="Amount (minor units, e.g. cents)",
        help_text="Positive to add funds; negative for an adjustment (a memo is then required).",
    )
    memo = forms.CharField(max_length=200, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        amount = data.get("amount_cents")
        if amount == 0:
            raise forms.ValidationError("The amount cannot be zero.")
        if amount is not None and amount < 0 and not data.get("memo"):
            raise forms.ValidationError("A negative adjustment needs a memo saying why.")
        return data


@admin.register(Balance)
class BalanceAdmin(admin.ModelAdmin):
    list_display = ["organization", "balance_cents", "held_cents", "available", "updated_at"]
    list_select_related = ["organization"]
    search_fields = ["organization__name"]
    raw_id_fields = ["organization"]
    readonly_fields = ["balance_cents", "held_cents", "updated_at"]
    change_form_template = "admin/billing/balance/change_form.html"

    @admin.display(description="Available")
    def available(self, obj: Balance) -> int:
        return obj.available_cents

    def get_readonly_fields(self, request: HttpRequest, obj: Balance | None = None) -> list[str]:
        return [*self.readonly_fields, "organization"] if obj else list(self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Balance | None = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:balance_id>/top-up/",
                self.admin_site.admin_view(self.top_up_view),
                name="billing_balance_top_up",
            ),
            *super().get_urls(),
        ]

    def top_up_view(self, request: HttpRequest, balance_id: int) -> HttpResponse:
        balance = get_object_or_404(Balance.objects.select_related("organization"), pk=balance_id)
        if not self.has_change_permission(request, balance):
            return HttpResponse(status=403)
        form = TopUpForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            amount, memo = form.cleaned_data["amount_cents"], form.cleaned_data["memo"]
            try:
                if amount > 0:
                    balance_top_up(
                        organization=balance.organization, amount_cents=amount, memo=memo
                    )
                else:
                    balance_adjust(
                        organization=balance.organization, amount_cents=amount, memo=memo
                    )
            except BillingError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"{balance.organization}: {amount:+d} recorded.")
                return HttpResponseRedirect(
                    reverse("admin:billing_balance_change", args=[balance.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top up {balance.organization}",
            "balance": balance,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/balance/top_up.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "organization",
        "kind",
        "amount_cents",
        "held_change_cents",
        "balance_after_cents",
        "held_after_cents",
        "call_id",
        "memo",
    ]
    list_filter = ["kind", "organization"]
    list_select_related = ["organization"]
    search_fields = ["organization__name", "memo", "call_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

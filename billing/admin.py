from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.errors import BillingError
from billing.models import Balance, LedgerEntry
from billing.money import cents_of, format_money, format_signed_money
from billing.services import balance_adjust, balance_top_up
from burki.admin_tenancy import READ, OrganizationScopedAdmin, is_operator


class TopUpForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=14,
        decimal_places=4,
        help_text=f"In {settings.BILLING_CURRENCY}, e.g. 25.00. Positive adds funds; negative is "
        "an adjustment (a memo is then required).",
    )
    memo = forms.CharField(
        max_length=200, required=False, help_text="Why: an invoice number, a refund, a mistake."
    )

    def clean_amount(self) -> int:
        amount: Decimal = self.cleaned_data["amount"]
        try:
            cents = cents_of(amount)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if cents == 0:
            raise forms.ValidationError("The amount cannot be zero.")
        return cents

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        amount = data.get("amount")
        if amount is not None and amount < 0 and not data.get("memo"):
            raise forms.ValidationError("A negative adjustment needs a memo saying why.")
        return data


@admin.register(Balance)
class BalanceAdmin(OrganizationScopedAdmin):
    """Read-only: every figure is the ledger's sum, changed by the services alone. An operator
    moves money with "Top up / adjust", which writes a ledger entry."""

    rights = READ
    list_display = ["organization", "balance", "reserved", "available", "calls_holding_money"]
    list_select_related = ["organization"]
    search_fields = ["organization__name"]
    fields = readonly_fields = (
        "organization",
        "balance",
        "reserved",
        "available",
        "calls_holding_money",
        "updated_at",
    )
    change_form_template = "admin/billing/balance/change_form.html"

    @admin.display(description="Balance", ordering="balance_cents")
    def balance(self, obj: Balance) -> str:
        return format_money(obj.balance_cents)

    @admin.display(description="Reserved (calls in progress)", ordering="held_cents")
    def reserved(self, obj: Balance) -> str:
        return format_money(obj.held_cents)

    @admin.display(description="Available")
    def available(self, obj: Balance) -> str:
        return format_money(obj.available_cents)

    @admin.display(description="Calls holding money", ordering="open_holds")
    def calls_holding_money(self, obj: Balance) -> int:
        return obj.open_holds

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # every organization gets its balance when it is created

    def has_change_permission(self, request: HttpRequest, obj: Balance | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Balance | None = None) -> bool:
        return False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_top_up": is_operator(request)}
        return super().change_view(request, object_id, form_url, extra_context)

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
        balance = self.get_object(request, str(balance_id))
        if not is_operator(request):
            raise PermissionDenied  # money is moved by platform operators only
        form = TopUpForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            amount, memo = form.cleaned_data["amount"], form.cleaned_data["memo"]
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
                self.message_user(
                    request, f"{balance.organization}: {format_signed_money(amount)} recorded."
                )
                return HttpResponseRedirect(
                    reverse("admin:billing_balance_change", args=[balance.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top up {balance.organization}",
            "balance": balance,
            "figures": {
                "balance": format_money(balance.balance_cents),
                "reserved": format_money(balance.held_cents),
                "available": format_money(balance.available_cents),
            },
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/balance/top_up.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(OrganizationScopedAdmin):
    rights = READ
    list_display = [
        "created_at",
        "organization",
        "kind",
        "amount",
        "reserved_change",
        "after",
        "call",
        "memo",
    ]
    list_filter = ["kind", "organization"]
    list_select_related = ["organization"]
    search_fields = ["organization__name", "memo", "call_id"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "created_at",
        "organization",
        "kind",
        "amount",
        "reserved_change",
        "balance_after",
        "reserved_after",
        "call_id",
        "memo",
    )

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, obj: LedgerEntry) -> str:
        return format_signed_money(obj.amount_cents)

    @admin.display(description="Reserved change")
    def reserved_change(self, obj: LedgerEntry) -> str:
        return format_signed_money(obj.held_change_cents)

    @admin.display(description="Balance after (reserved)")
    def after(self, obj: LedgerEntry) -> str:
        return f"{format_money(obj.balance_after_cents)} ({format_money(obj.held_after_cents)})"

    @admin.display(description="Balance after")
    def balance_after(self, obj: LedgerEntry) -> str:
        return format_money(obj.balance_after_cents)

    @admin.display(description="Reserved after")
    def reserved_after(self, obj: LedgerEntry) -> str:
        return format_money(obj.held_after_cents)

    @admin.display(description="Call")
    def call(self, obj: LedgerEntry) -> str:
        # The first block of the id, whole on hover (search takes the whole id or its start).
        if obj.call_id is None:
            return "—"
        return format_html('<span title="{}">{}…</span>', obj.call_id, str(obj.call_id)[:8])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

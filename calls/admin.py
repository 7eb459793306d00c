from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from billing.money import format_money
from burki.admin_tenancy import (
    READ,
    OrganizationScopedAdmin,
    OrganizationScopedInline,
    is_operator,
    organization_ids,
)
from burki.models import Organization
from calls.dashboard import DAYS, calls_dashboard
from calls.models import Call, CallEvent


class CallEventInline(OrganizationScopedInline, admin.TabularInline):
    model = CallEvent
    rights = READ
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "status", "source", "detail")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Call)
class CallAdmin(OrganizationScopedAdmin):
    """Read-only for everyone: a call changes through its provider's events alone."""

    rights = READ
    list_display = [
        "created_at",
        "organization",
        "from_number",
        "to_number",
        "provider",
        "status",
        "answered_by",
        "duration_seconds",
        "cost",
        "settled_by",
    ]
    # "Settled by: the sweep's rule" lists the calls whose provider never told: review them.
    list_filter = ["status", "settled_by", "answered_by", "provider", "organization"]
    list_select_related = ["organization"]
    search_fields = ["from_number", "to_number", "call_sid", "id"]
    date_hierarchy = "created_at"
    inlines = [CallEventInline]
    change_list_template = "admin/calls/call/change_list.html"

    @admin.display(description="Cost", ordering="cost_cents")
    def cost(self, obj: Call) -> str:
        return format_money(obj.cost_cents)

    @admin.display(description="Hold")
    def hold(self, obj: Call) -> str:
        return format_money(obj.hold_cents)

    def get_fields(self, request: HttpRequest, obj: Call | None = None) -> Any:
        names = [field.name for field in Call._meta.fields]
        # Money as money: the hold and the cost in the currency, not raw cents.
        return [
            {"hold_cents": "hold", "cost_cents": "cost"}.get(name, name)
            for name in names
            if name != "id"
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Call | None = None) -> Any:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # calls are placed through the API or `place_test_call`

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False  # so its page is "View call", with no Save button

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="calls_call_dashboard",
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        calls = self.get_queryset(request)
        organizations = Organization.objects.order_by("name")
        if not is_operator(request):
            organizations = organizations.filter(
                pk__in=organization_ids(request, self.rights, "view")
            )
        chosen = None
        if "organization" in request.GET:
            wanted = request.GET["organization"]
            chosen = organizations.filter(pk=wanted).first() if wanted.isdigit() else None
            if chosen is None:
                raise Http404  # not one the viewer may see: as if there were none
            calls = calls.filter(organization=chosen)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Calls of the last {DAYS} days: {chosen or 'every organization'}",
            "opts": self.model._meta,
            "organizations": organizations,
            "chosen": chosen,
            "dashboard": calls_dashboard(calls),
        }
        return TemplateResponse(request, "admin/calls/dashboard.html", context)

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from calls.models import Call, CallEvent


class CallEventInline(admin.TabularInline):
    model = CallEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "status", "source", "detail")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "organization",
        "from_number",
        "to_number",
        "provider",
        "status",
        "duration_seconds",
        "cost_cents",
        "settled_by",
    ]
    # "Settled by: the sweep's rule" lists the calls whose provider never told: review them.
    list_filter = ["status", "settled_by", "provider", "organization"]
    list_select_related = ["organization"]
    search_fields = ["from_number", "to_number", "call_sid", "id"]
    date_hierarchy = "created_at"
    inlines = [CallEventInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Call | None = None) -> list[str]:
        return [field.name for field in Call._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # calls are placed through the API or `place_test_call`

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from burki.models import ApiKey, Organization
from burki.services import api_key_create, api_key_revoke


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = readonly_fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "rate_cents_per_minute", "max_concurrent_calls", "created_at"]
    search_fields = ["name"]
    inlines = [ApiKeyInline]
    actions = ["create_api_key"]

    @admin.action(description="Create an API key (shown once)")
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for organization in queryset:
            _, raw_key = api_key_create(organization=organization, name="admin")
            self.message_user(
                request,
                f"New API key for {organization}: {raw_key} — copy it now; it is not stored and "
                "will not be shown again.",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "organization", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["organization"]
    search_fields = ["name", "prefix", "organization__name"]
    raw_id_fields = ["organization"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # A key's owner never changes: a key moved between organizations would be a leak.
        return [*self.readonly_fields, "organization"] if obj else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        api_key, raw_key = api_key_create(organization=obj.organization, name=obj.name)
        obj.pk = api_key.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"New API key: {raw_key} — copy it now; it is not stored and will not be shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(api_key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead: calls keep their history

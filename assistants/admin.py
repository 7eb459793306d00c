from __future__ import annotations

from django.contrib import admin

from assistants.models import Assistant, ConversationFlow
from burki.admin_tenancy import MANAGED, OrganizationScopedAdmin


@admin.register(Assistant)
class AssistantAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    list_display = ["name", "id", "organization", "max_call_duration_seconds", "is_active"]
    list_filter = ["is_active", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]


@admin.register(ConversationFlow)
class ConversationFlowAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    list_display = ["name", "id", "organization", "base_assistant", "is_live"]
    list_filter = ["is_live", "organization"]
    list_select_related = ["organization", "base_assistant"]
    search_fields = ["name", "organization__name"]
    autocomplete_fields = ["base_assistant"]

from django.contrib import admin

from assistants.models import Assistant, ConversationFlow


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "organization", "max_call_duration_seconds", "is_active"]
    list_filter = ["is_active", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]
    raw_id_fields = ["organization"]


@admin.register(ConversationFlow)
class ConversationFlowAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "organization", "base_assistant", "is_live"]
    list_filter = ["is_live", "organization"]
    list_select_related = ["organization", "base_assistant"]
    search_fields = ["name", "organization__name"]
    raw_id_fields = ["organization", "base_assistant"]

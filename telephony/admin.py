from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from burki.admin_tenancy import MANAGED, OrganizationScopedAdmin
from telephony.models import PhoneNumber, ProviderAccount, SipTrunk
from telephony.providers import PROVIDERS, get_provider, provider_choices


def _account_form_fields() -> dict[str, forms.Field]:
    """One form field per provider credential, named `<provider>__<field>`."""
    fields: dict[str, forms.Field] = {}
    for provider_name in PROVIDERS:
        provider = get_provider(provider_name)
        for spec in provider.account_fields:
            if spec.secret:
                widget: forms.Widget = forms.PasswordInput(render_value=False)
                if spec.multiline:
                    widget = forms.Textarea(attrs={"rows": 4, "autocomplete": "off"})
            else:
                widget = forms.Textarea(attrs={"rows": 4}) if spec.multiline else forms.TextInput()
            help_text = spec.help_text
            if spec.secret:
                help_text = (help_text + " " if help_text else "") + (
                    "Stored encrypted and never shown again; leave blank to keep the current one."
                )
            fields[f"{provider_name}__{spec.name}"] = forms.CharField(
                label=f"{provider.label}: {spec.label}",
                required=False,
                widget=widget,
                help_text=help_text,
                strip=not spec.secret,
            )
    return fields


def accounts_of(provider_name: str) -> bool:
    """Whether numbers on this provider dial through a provider account."""
    return bool(get_provider(provider_name).account_fields)


class ProviderAccountForm(forms.ModelForm):
    class Meta:
        model = ProviderAccount
        fields = ["organization", "provider", "name", "calls_per_second"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The sandbox and BYO SIP trunks dial without an account: they are no choice here.
        self.fields["provider"].choices = [  # type: ignore[attr-defined]
            ("", "---------"),
            *((name, label) for name, label in provider_choices() if accounts_of(name)),
        ]
        if self.instance.pk:
            for key, value in self.instance.settings.items():
                name = f"{self.instance.provider}__{key}"
                if name in self.fields:
                    self.fields[name].initial = value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        provider_name = data.get("provider")
        if not provider_name:
            return data
        provider = get_provider(provider_name)
        existing = self.instance.secrets if self.instance.pk else {}
        same_provider = self.instance.pk and self.instance.provider == provider_name
        for spec in provider.account_fields:
            key = f"{provider_name}__{spec.name}"
            value = data.get(key, "")
            has_old = spec.secret and same_provider and existing.get(spec.name)
            if spec.required and not value and not has_old:
                self.add_error(key, "This field is required for this provider.")
            elif (
                value and not spec.secret and spec.pattern and not re.fullmatch(spec.pattern, value)
            ):
                self.add_error(key, spec.pattern_message)
        return data

    def save(self, commit: bool = True) -> ProviderAccount:
        account: ProviderAccount = super().save(commit=False)
        provider = get_provider(account.provider)
        settings: dict[str, str] = {}
        secrets: dict[str, str] = dict(account.secrets) if self.instance.pk else {}
        if self.instance.pk and "provider" in self.changed_data:
            secrets = {}
        for spec in provider.account_fields:
            value = self.cleaned_data.get(f"{account.provider}__{spec.name}", "")
            if spec.secret:
                if value:
                    secrets[spec.name] = value
            elif value:
                settings[spec.name] = value
        account.settings = settings
        account.secrets = secrets
        if commit:
            account.save()
        return account


@admin.register(ProviderAccount)
class ProviderAccountAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    form = ProviderAccountForm
    # Secrets are never listed, searched or shown: only that they are set.
    list_display = ["name", "provider", "organization", "secrets_set", "updated_at"]
    list_filter = ["provider"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]

    @admin.display(description="Secrets")
    def secrets_set(self, obj: ProviderAccount) -> str:
        return ", ".join(sorted(obj.secrets)) + " (set)" if obj.secrets else "none"

    def get_form(
        self,
        request: HttpRequest,
        obj: ProviderAccount | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        # Credential fields come from the registry, so they are declared when the form is built.
        kwargs["form"] = type("ProviderAccountForm", (ProviderAccountForm,), _account_form_fields())
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: ProviderAccount | None = None) -> Any:
        fieldsets: list[Any] = [
            (None, {"fields": ["organization", "provider", "name", "calls_per_second"]})
        ]
        for provider_name in PROVIDERS:
            provider = get_provider(provider_name)
            if provider.account_fields:
                names = [f"{provider_name}__{spec.name}" for spec in provider.account_fields]
                fieldsets.append((provider.label, {"fields": names, "classes": ["collapse"]}))
        return fieldsets


@admin.register(PhoneNumber)
class PhoneNumberAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    list_display = [
        "number",
        "label",
        "organization",
        "provider",
        "provider_account",
        "assistant",
        "conversation_flow",
    ]
    list_filter = ["provider", "organization"]
    list_select_related = ["organization", "provider_account", "assistant", "conversation_flow"]
    search_fields = ["number", "label", "organization__name"]
    # Looked up as you type, among the rows you may see (never another organization's).
    autocomplete_fields = ["provider_account", "assistant", "conversation_flow"]


class SipTrunkForm(forms.ModelForm):
    new_password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="For digest authentication. Stored encrypted and never shown again; "
        "leave blank to keep the current one.",
    )
    clear_password = forms.BooleanField(
        required=False, help_text="Remove the stored password (IP-authenticated trunk)."
    )

    class Meta:
        model = SipTrunk
        fields = [
            "organization",
            "name",
            "gateway",
            "transport",
            "username",
            "registers",
            "priority",
            "enabled",
            "caller_id_format",
        ]

    def save(self, commit: bool = True) -> SipTrunk:
        trunk: SipTrunk = super().save(commit=False)
        if self.cleaned_data.get("new_password"):
            trunk.password = self.cleaned_data["new_password"]
        elif self.cleaned_data.get("clear_password"):
            trunk.password = ""
        if commit:
            trunk.save()
        return trunk


@admin.register(SipTrunk)
class SipTrunkAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    form = SipTrunkForm
    # The password is never listed, searched or shown: only whether one is set.
    list_display = [
        "name",
        "organization",
        "gateway",
        "transport",
        "priority",
        "enabled",
        "registers",
        "password_set",
    ]
    list_filter = ["enabled", "transport", "registers"]
    list_select_related = ["organization"]
    search_fields = ["name", "gateway", "organization__name"]
    fields = [
        "organization",
        "name",
        "gateway",
        "transport",
        "username",
        "new_password",
        "clear_password",
        "registers",
        "priority",
        "enabled",
        "caller_id_format",
    ]

    @admin.display(description="Password", boolean=True)
    def password_set(self, obj: SipTrunk) -> bool:
        return bool(obj.password)

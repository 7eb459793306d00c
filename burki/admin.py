from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.money import format_money
from burki.admin_tenancy import (
    FULL,
    VIEW,
    OperatorOnlyAdmin,
    OrganizationScopedAdmin,
    OrganizationScopedInline,
    Rights,
    Role,
    is_operator,
    organization_ids,
)
from burki.models import ApiKey, Membership, Organization
from burki.services import api_key_create, api_key_revoke, membership_would_leave_no_owner

OWNERS_ONLY: Rights = {Role.OWNER: FULL}


class ApiKeyInline(OrganizationScopedInline, admin.TabularInline):
    model = ApiKey
    rights: Rights = {Role.OWNER: VIEW}
    extra = 0
    can_delete = False
    fields = readonly_fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MembershipInline(OrganizationScopedInline, admin.TabularInline):
    model = Membership
    rights: Rights = {Role.OWNER: VIEW}
    extra = 0
    fields = readonly_fields = ("user", "role", "created_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # members are added on their own page, with a login


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_path = "pk"
    # Everyone of an organization reads its page; what it can change is money (rate, cap),
    # an operator's alone. Owners create API keys with the action.
    rights: Rights = {Role.OWNER: VIEW, Role.MEMBER: VIEW}
    list_display = ["name", "rate", "simultaneous_calls", "created_at"]
    search_fields = ["name"]
    inlines = [ApiKeyInline, MembershipInline]
    actions = ["create_api_key"]

    def get_inlines(self, request: HttpRequest, obj: Organization | None = None) -> Any:
        return self.inlines if obj else []  # a new organization has no keys or members yet

    @admin.display(description="Rate", ordering="rate_cents_per_minute")
    def rate(self, obj: Organization) -> str:
        return f"{format_money(obj.effective_rate_cents_per_minute)}/min"

    @admin.display(description="Simultaneous calls", ordering="max_concurrent_calls")
    def simultaneous_calls(self, obj: Organization) -> int:
        return obj.effective_max_concurrent_calls

    def has_create_api_key_permission(self, request: HttpRequest) -> bool:
        return is_operator(request) or bool(organization_ids(request, OWNERS_ONLY, "add"))

    @admin.action(description="Create an API key (shown once)", permissions=["create_api_key"])
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        if not is_operator(request):
            queryset = queryset.filter(pk__in=organization_ids(request, OWNERS_ONLY, "add"))
        for organization in queryset:
            _, raw_key = api_key_create(organization=organization, name="admin")
            self.message_user(
                request,
                f"New API key for {organization}: {raw_key} — copy it now; it is not stored and "
                "will not be shown again.",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdmin):
    rights: Rights = {Role.OWNER: frozenset({"view", "add", "change"})}
    list_display = ["name", "prefix", "organization", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["organization"]
    search_fields = ["name", "prefix", "organization__name"]
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

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(api_key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead: calls keep their history


class MembershipAddForm(forms.ModelForm):
    """A member is a login: its username and first password are chosen here."""

    username = forms.CharField(
        max_length=150,
        help_text="The login of the new member (letters, digits and @.+-_).",
    )
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Their first password: give it to them; they can change it once logged in.",
        required=False,
    )

    class Meta:
        model = Membership
        fields = ["organization", "role"]

    def __init__(self, *args: Any, operator: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operator = operator
        if operator:
            self.fields[
                "username"
            ].help_text += " An existing user's name adds that user to the organization."
            self.fields["password"].help_text += " Not needed for an existing user."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        username = data.get("username")
        if not username:
            return data
        existing: User | None = User.objects.filter(username=username).first()
        if existing is not None:
            if not self.operator:
                self.add_error("username", "This username is taken: choose another.")
            elif Membership.objects.filter(
                user=existing, organization=data.get("organization")
            ).exists():
                self.add_error("username", "This user is a member of that organization already.")
            self.existing_user: User | None = existing
            return data
        self.existing_user = None
        password = data.get("password")
        if not password:
            self.add_error("password", "A new member needs a first password.")
        else:
            try:
                validate_password(password, User(username=username))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data

    @transaction.atomic
    def save(self, commit: bool = True) -> Membership:
        membership: Membership = super().save(commit=False)
        user = self.existing_user
        if user is None:
            user = User.objects.create_user(
                self.cleaned_data["username"], password=self.cleaned_data["password"]
            )
        if not user.is_staff:
            user.is_staff = True  # the admin lets in staff only
            user.save(update_fields=["is_staff"])
        membership.user = user
        if commit:
            membership.save()
        return membership


LAST_OWNER = "An organization keeps at least one owner: make another member owner first."


class MembershipChangeForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["role"]

    def clean_role(self) -> str:
        # The admin's change view runs in a transaction: the organization stays locked to its
        # commit, so two owners demoting each other at once cannot both succeed.
        role: str = self.cleaned_data["role"]
        if membership_would_leave_no_owner(membership=self.instance, role=role):
            raise forms.ValidationError(LAST_OWNER)
        return role


@admin.register(Membership)
class MembershipAdmin(OrganizationScopedAdmin):
    rights = OWNERS_ONLY
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__username", "organization__name"]

    def get_form(
        self, request: HttpRequest, obj: Membership | None = None, change: bool = False, **kw: Any
    ) -> Any:
        if obj is None:
            form = super().get_form(request, obj, change, form=MembershipAddForm, **kw)
            operator = is_operator(request)

            class AddForm(form):  # type: ignore[valid-type,misc]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, operator=operator, **kwargs)

            return AddForm
        return super().get_form(request, obj, change, form=MembershipChangeForm, **kw)

    def get_actions(self, request: HttpRequest) -> Any:
        # One at a time, on its delete page, where the last owner is refused.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        if obj is not None and membership_would_leave_no_owner(membership=obj, lock=False):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        if membership_would_leave_no_owner(membership=obj):
            raise PermissionDenied(LAST_OWNER)
        super().delete_model(request, obj)

    def get_fields(self, request: HttpRequest, obj: Membership | None = None) -> Any:
        if obj is None:
            return ["username", "password", "organization", "role"]
        return ["user", "organization", "role", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> Any:
        return ["user", "organization", "created_at"] if obj else []


class MembershipOfUserInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["organization", "role"]


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(OperatorOnlyAdmin, DjangoUserAdmin):
    inlines = [MembershipOfUserInline]
    list_display = ["username", "is_superuser", "is_staff", "is_active", "last_login"]


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(OperatorOnlyAdmin, DjangoGroupAdmin):
    pass

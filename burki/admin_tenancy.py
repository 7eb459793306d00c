"""Who sees what in the admin: platform operators (superusers) everything, anyone else only the
rows of the organizations it is a member of, with the rights of its role there.

Every ModelAdmin of a model that belongs to an organization is an `OrganizationScopedAdmin`: the
change list, the forms and their foreign-key choices, look-ups (raw id, autocomplete), filters,
search, actions, history and the read-only pages all start from `get_queryset`, which keeps the
user's organizations only, and an object outside them is a 404 (never a 403, which would say it
exists). Django's own per-model permissions are not consulted for members: their role decides.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from burki.models import Membership, Organization

Role = Membership.Role

# What each role may do ("view", "add", "change", "delete") with its organizations' rows.
Rights = dict[str, frozenset[str]]

VIEW = frozenset({"view"})
FULL = frozenset({"view", "add", "change", "delete"})
# What a role may do with the rows of its organizations that no operator must check: numbers,
# assistants, flows, provider accounts and trunks are the organization's own to manage.
MANAGED: Rights = {Role.OWNER: FULL, Role.MEMBER: FULL}
# Calls, balances and the ledger: read by everyone of the organization, written only by the
# services (and money moved only by operators).
READ: Rights = {Role.OWNER: VIEW, Role.MEMBER: VIEW}


def user_roles(request: HttpRequest) -> dict[int, str]:
    """The requesting user's role in each of its organizations, read once per request."""
    cached: dict[int, str] | None = getattr(request, "_burki_roles", None)
    if cached is None:
        user = request.user
        cached = (
            dict(Membership.objects.filter(user_id=user.pk).values_list("organization_id", "role"))
            if user.is_authenticated and user.is_active
            else {}
        )
        request._burki_roles = cached  # type: ignore[attr-defined]
    return cached


def is_operator(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_superuser)


def organization_ids(request: HttpRequest, rights: Rights, action: str) -> list[int]:
    """The organizations in which the user's role may do `action` (any right includes view)."""
    return [
        organization_id
        for organization_id, role in user_roles(request).items()
        if action in rights.get(role, ()) or (action == "view" and rights.get(role))
    ]


class MembersOrganizationsFilter(admin.RelatedFieldListFilter):
    """The organizations a member may see, read from its memberships (not from every row)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        ids = organization_ids(request, model_admin.rights, "view")
        return [(org.pk, str(org)) for org in Organization.objects.filter(pk__in=ids)]


class OrganizationScopedAdmin(admin.ModelAdmin):
    # The lookup from this model to its organization's id ("pk" for Organization itself).
    organization_path = "organization"
    # What each role may do with its organizations' rows; a role not listed may do nothing.
    rights: Rights = {}

    def organization_id_of(self, obj: models.Model) -> int | None:
        *hops, last = self.organization_path.split("__")
        value: Any = obj
        for hop in hops:
            value = getattr(value, hop)
        return value.pk if last in ("pk", "id") else getattr(value, f"{last}_id")

    def allowed(self, request: HttpRequest, action: str, obj: models.Model | None = None) -> bool:
        ids = organization_ids(request, self.rights, action)
        return bool(ids) if obj is None else self.organization_id_of(obj) in ids

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if is_operator(request):
            return queryset
        ids = organization_ids(request, self.rights, "view")
        return queryset.filter(**{f"{self.organization_path}__in": ids})

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Django would redirect with "… doesn't exist": the same 404 for another
            # organization's row and for no row at all.
            raise Http404
        return obj

    def get_field_queryset(self, db: Any, db_field: Any, request: HttpRequest) -> Any:
        if is_operator(request):
            return super().get_field_queryset(db, db_field, request)
        model = db_field.remote_field.model
        if model is Organization:
            # Only where this row may be written: a member of one organization and owner of
            # another adds API keys to the second alone.
            writable = {*organization_ids(request, self.rights, "add")}
            writable |= {*organization_ids(request, self.rights, "change")}
            return Organization.objects.filter(pk__in=writable)
        related = self.admin_site._registry.get(model)
        if isinstance(related, OrganizationScopedAdmin):
            return related.get_queryset(request)
        return model._default_manager.none()

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = super().get_list_display(request)
        # A column that says the same organization on every row only makes the table wider.
        if not is_operator(request) and len(organization_ids(request, self.rights, "view")) == 1:
            return [column for column in columns if column != "organization"]
        return columns

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = super().get_list_filter(request)
        if is_operator(request):
            return filters
        # A relation's filter would list every organization (or assistant) in the database.
        scoped: list[Any] = []
        for item in filters:
            field = self._relation(item)
            if field is None:
                scoped.append(item)
            elif field.related_model is Organization:
                scoped.append((item, MembersOrganizationsFilter))
            else:
                scoped.append((item, admin.RelatedOnlyFieldListFilter))
        return scoped

    def _relation(self, item: Any) -> Any:
        if not isinstance(item, str) or "__" in item:
            return None
        field = self.model._meta.get_field(item)
        return field if field.is_relation else None

    def has_module_permission(self, request: HttpRequest) -> bool:
        if is_operator(request):
            return super().has_module_permission(request)
        return self.allowed(request, "view")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_view_permission(request, obj)
        return self.allowed(request, "view", obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        if is_operator(request):
            return super().has_add_permission(request)
        return self.allowed(request, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_change_permission(request, obj)
        return self.allowed(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_delete_permission(request, obj)
        return self.allowed(request, "delete", obj)


class OrganizationScopedInline(InlineModelAdmin):
    """An inline judged by its parent row's organization (`obj` is the parent)."""

    rights: Rights = {}

    def _allowed(self, request: HttpRequest, action: str, obj: Any) -> bool:
        ids = organization_ids(request, self.rights, action)
        if obj is None:
            return bool(ids)
        parent = self.admin_site._registry[self.parent_model]
        assert isinstance(parent, OrganizationScopedAdmin)
        return parent.organization_id_of(obj) in ids

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_view_permission(request, obj)
        return self._allowed(request, "view", obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_add_permission(request, obj)
        return self._allowed(request, "add", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_change_permission(request, obj)
        return self._allowed(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_operator(request):
            return super().has_delete_permission(request, obj)
        return self._allowed(request, "delete", obj)


class OperatorOnlyAdmin(admin.ModelAdmin):
    """For what belongs to no organization (users, groups): platform operators only."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_operator(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_operator(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_operator(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_operator(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_operator(request)

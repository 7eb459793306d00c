from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from burki.models import ApiKey, Membership, Organization

API_KEY_SCHEME = "bk_"


def api_key_create(*, organization: Organization, name: str) -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned once and never stored."""
    raw_key = API_KEY_SCHEME + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        prefix=raw_key[: ApiKey.PREFIX_LENGTH],
        hashed_key=ApiKey.hash(raw_key),
    )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke a key; returns False when it was already revoked."""
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    api_key.refresh_from_db(fields=["revoked_at"])
    return changed == 1


def membership_would_leave_no_owner(
    *, membership: Membership, role: str | None = None, lock: bool = True
) -> bool:
    """Whether giving `membership` the `role` (None: removing it) would leave its organization
    without an owner. With `lock`, inside the transaction that makes the change, the
    organization's row is locked first, so two such changes at once are decided one after the
    other (without it: a question for a page, not a decision)."""
    if membership.pk is None or membership.role != Membership.Role.OWNER:
        return False
    if role == Membership.Role.OWNER:
        return False
    if lock:
        organizations = Organization.objects.select_for_update()
        list(organizations.filter(pk=membership.organization_id).values("pk"))
    others = Membership.objects.filter(
        organization_id=membership.organization_id, role=Membership.Role.OWNER
    ).exclude(pk=membership.pk)
    return not others.exists()

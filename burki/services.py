from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from burki.models import ApiKey, Organization

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

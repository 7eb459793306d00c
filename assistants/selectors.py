from __future__ import annotations

from assistants.models import Assistant


def assistant_get(*, assistant_id: int) -> Assistant | None:
    """An assistant, whoever owns it (calls.permissions judges whether the caller may use it)."""
    try:
        return Assistant.objects.get(pk=assistant_id)
    except Assistant.DoesNotExist:
        return None

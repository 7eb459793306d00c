"""Billing's services, below the API: the two ways a call's hold is written."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection, models, transaction

from billing.models import Balance, LedgerEntry
from billing.services import balance_hold_call
from tests.conftest import Tenant


def compared(model: type[models.Model], *skipped: str) -> list[str]:
    """Every concrete field of `model` but the ones that differ between any two writes."""
    return [field.attname for field in model._meta.concrete_fields if field.name not in skipped]


LEDGER_FIELDS = compared(LedgerEntry, "id", "created_at")
BALANCE_FIELDS = compared(Balance, "id", "updated_at")


def hold_and_roll_back(
    tenant: Tenant, call_id: uuid.UUID, *, max_open_holds: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Hold a ten-minute call, read what it wrote, and undo it: the next hold starts from the
    same balance. Also returns how often the hold had to ask whether there is room."""
    asked: list[None] = []
    with transaction.atomic():
        balance_hold_call(
            organization_id=tenant.organization.pk,
            call_id=call_id,
            rate_cents_per_minute=10,
            max_seconds=600,
            max_open_holds=max_open_holds,
            check_room=lambda: asked.append(None),
        )
        entries = list(LedgerEntry.objects.filter(call_id=call_id).values(*LEDGER_FIELDS))
        balances = list(
            Balance.objects.filter(organization=tenant.organization).values(*BALANCE_FIELDS)
        )
        transaction.set_rollback(True)
    return entries, balances, len(asked)


def test_the_single_statement_and_the_locked_path_write_the_same_hold(tenant: Tenant) -> None:
    assert connection.vendor == "postgresql"
    call_id = uuid.uuid4()

    # Room under the cap: the single statement holds. At the cap it refuses, and the locked path
    # asks for room (granted here) and holds the same amount for the same call.
    fast, fast_balance, fast_asked = hold_and_roll_back(tenant, call_id, max_open_holds=5)
    locked, locked_balance, locked_asked = hold_and_roll_back(tenant, call_id, max_open_holds=0)

    assert (fast_asked, locked_asked) == (0, 1)
    assert [(row["kind"], row["held_change_cents"]) for row in fast] == [("hold", 100)]
    assert fast == locked
    assert fast_balance == locked_balance
    assert [(row["held_cents"], row["open_holds"]) for row in fast_balance] == [(100, 1)]

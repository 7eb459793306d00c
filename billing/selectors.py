from __future__ import annotations

from django.db.models import QuerySet

from billing.models import Balance, LedgerEntry


def balance_for_organization(*, organization_id: int) -> Balance | None:
    return Balance.objects.filter(organization_id=organization_id).first()


def ledger_for_organization(*, organization_id: int) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(organization_id=organization_id).order_by(
        "-created_at", "-id"
    )

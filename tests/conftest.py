from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from billing.services import balance_top_up
from burki.models import Organization
from burki.services import api_key_create
from calls.models import Call
from tests.factories import OrganizationFactory


@dataclass
class Tenant:
    organization: Organization
    api_key: str
    client: APIClient


def make_tenant(balance_cents: int = 10_000) -> Tenant:
    organization = OrganizationFactory()
    if balance_cents:
        balance_top_up(organization=organization, amount_cents=balance_cents, memo="test funds")
    _, raw_key = api_key_create(organization=organization, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return Tenant(organization, raw_key, client)


@pytest.fixture
def tenant(db: None) -> Tenant:
    return make_tenant()


@pytest.fixture
def outsider(db: None) -> Tenant:
    return make_tenant()


def assert_money_consistent(organization: Organization) -> None:
    """The ledger sums to the balance and to the held part, and holds match open calls."""
    balance = Balance.objects.get(organization=organization)
    entries = LedgerEntry.objects.filter(organization=organization)
    assert sum(e.amount_cents for e in entries) == balance.balance_cents
    assert sum(e.held_change_cents for e in entries) == balance.held_cents
    open_holds = sum(
        c.hold_cents
        for c in Call.objects.filter(organization=organization, cost_cents__isnull=True)
    )
    assert balance.held_cents == open_holds
    unsettled = Call.objects.filter(organization=organization, cost_cents__isnull=True).count()
    assert balance.open_holds == unsettled
    assert 0 <= balance.held_cents <= balance.balance_cents

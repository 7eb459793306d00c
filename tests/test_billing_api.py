"""GET /billing/balance and GET /billing/ledger: the caller's own money, nobody else's."""

from __future__ import annotations

from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from burki.services import api_key_create
from calls.models import Call
from tests.conftest import Tenant
from tests.factories import OrganizationFactory, PhoneNumberFactory


def place_call(tenant: Tenant) -> Call:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"},
        format="json",
    )
    return Call.objects.get(pk=response.json()["call_id"])


def test_the_balance_shows_what_is_reserved_and_available(tenant: Tenant) -> None:
    place_call(tenant)

    response = tenant.client.get("/billing/balance")

    assert response.status_code == 200
    assert response.json() == {
        "balance_cents": 10_000,
        "reserved_cents": 100,
        "available_cents": 9_900,
        "currency": "USD",
        "rate_cents_per_minute": 10,
    }


def test_the_organizations_own_rate_is_shown(tenant: Tenant) -> None:
    tenant.organization.rate_cents_per_minute = 25
    tenant.organization.save()

    assert tenant.client.get("/billing/balance").json()["rate_cents_per_minute"] == 25


def test_an_organization_never_funded_has_zero(db) -> None:
    _, raw_key = api_key_create(organization=OrganizationFactory(), name="new")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    response = client.get("/billing/balance")

    assert response.json() == {
        "balance_cents": 0,
        "reserved_cents": 0,
        "available_cents": 0,
        "currency": "USD",
        "rate_cents_per_minute": 10,
    }
    # The balance came with the organization, empty, and reading it changed nothing.
    assert Balance.objects.values_list("balance_cents", "held_cents", "open_holds").get() == (
        0,
        0,
        0,
    )


def test_an_outsider_sees_only_its_own_balance(tenant: Tenant, outsider: Tenant) -> None:
    place_call(tenant)

    response = outsider.client.get("/billing/balance")

    assert response.json()["reserved_cents"] == 0


def test_the_ledger_lists_every_change_newest_first(tenant: Tenant) -> None:
    call = place_call(tenant)
    hold = LedgerEntry.objects.get(kind="hold")
    top_up = LedgerEntry.objects.get(kind="top_up")

    response = tenant.client.get("/billing/ledger")

    assert response.status_code == 200
    assert response.json() == {
        "next": None,
        "previous": None,
        "results": [
            {
                "id": hold.pk,
                "kind": "hold",
                "amount_cents": 0,
                "reserved_change_cents": 100,
                "balance_after_cents": 10_000,
                "reserved_after_cents": 100,
                "call_id": str(call.pk),
                "memo": "",
                "created_at": hold.created_at.isoformat().replace("+00:00", "Z"),
            },
            {
                "id": top_up.pk,
                "kind": "top_up",
                "amount_cents": 10_000,
                "reserved_change_cents": 0,
                "balance_after_cents": 10_000,
                "reserved_after_cents": 0,
                "call_id": None,
                "memo": "test funds",
                "created_at": top_up.created_at.isoformat().replace("+00:00", "Z"),
            },
        ],
    }


def test_the_ledger_is_paginated_by_cursor(tenant: Tenant) -> None:
    place_call(tenant)

    first = tenant.client.get("/billing/ledger?page_size=1").json()
    second = tenant.client.get(first["next"]).json()

    assert [entry["kind"] for entry in first["results"]] == ["hold"]
    assert [entry["kind"] for entry in second["results"]] == ["top_up"]
    assert first["next"].startswith("http://testserver/billing/ledger?cursor=")
    assert second["next"] is None


def test_an_outsider_sees_only_its_own_ledger(tenant: Tenant, outsider: Tenant) -> None:
    place_call(tenant)

    results = outsider.client.get("/billing/ledger").json()["results"]

    assert [(entry["kind"], entry["memo"]) for entry in results] == [("top_up", "test funds")]
    assert {entry["id"] for entry in results} == set(
        LedgerEntry.objects.filter(organization=outsider.organization).values_list("pk", flat=True)
    )


def test_both_need_an_api_key(db) -> None:
    for url in ["/billing/balance", "/billing/ledger"]:
        response = APIClient().get(url)
        assert response.status_code == 401
        assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_queries_are_few(tenant: Tenant, django_assert_num_queries) -> None:
    place_call(tenant)
    with django_assert_num_queries(2):
        tenant.client.get("/billing/balance")
    with django_assert_num_queries(2):
        tenant.client.get("/billing/ledger")

"""The do-not-call list: `/do-not-call`, and the check every dial makes (POST /calls/initiate
here; campaigns in tests/test_campaigns.py)."""

from __future__ import annotations

import pytest

from billing.models import Balance, LedgerEntry
from calls.do_not_call import do_not_call_check, do_not_call_import_csv
from calls.errors import NumberOnDoNotCallList
from calls.models import Call, DoNotCallNumber, IdempotencyKey
from tests.conftest import Tenant
from tests.factories import PhoneNumberFactory

TO = "+15559876543"
FROM = "+15551234567"


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


def test_a_number_added_through_the_api_is_listed_with_who_added_it(tenant: Tenant) -> None:
    response = tenant.client.post(
        "/do-not-call", {"number": "+1 (555) 987-6543", "reason": "asked"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["number"] == TO and body["reason"] == "asked"
    assert body["added_by"] == "API key test"
    entry = DoNotCallNumber.objects.get(organization=tenant.organization)
    assert (entry.number, entry.added_by) == (TO, "API key test")
    listed = tenant.client.get("/do-not-call").json()
    assert [row["number"] for row in listed["results"]] == [TO]


def test_adding_a_listed_number_again_keeps_the_first_entry(tenant: Tenant) -> None:
    tenant.client.post("/do-not-call", {"number": TO, "reason": "first"}, format="json")
    again = tenant.client.post("/do-not-call", {"number": TO, "reason": "second"}, format="json")

    assert again.status_code == 200
    assert again.json()["reason"] == "first"
    assert DoNotCallNumber.objects.filter(organization=tenant.organization).count() == 1


def test_a_bad_number_is_a_400_and_lists_nothing(tenant: Tenant) -> None:
    response = tenant.client.post("/do-not-call", {"number": "555"}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "number must be a phone number in E.164 format, e.g. +15551234567"
    )
    assert not DoNotCallNumber.objects.exists()


def test_a_removed_number_may_be_called_again(tenant: Tenant, number) -> None:
    tenant.client.post("/do-not-call", {"number": TO}, format="json")

    assert tenant.client.delete(f"/do-not-call/{TO}").status_code == 204
    assert tenant.client.delete(f"/do-not-call/{TO}").status_code == 404
    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": TO},
        format="json",
    )
    assert response.status_code == 200


def test_another_organizations_list_is_neither_shown_nor_changed(
    tenant: Tenant, outsider: Tenant
) -> None:
    tenant.client.post("/do-not-call", {"number": TO}, format="json")

    assert outsider.client.get("/do-not-call").json()["results"] == []
    assert outsider.client.delete(f"/do-not-call/{TO}").status_code == 404
    assert DoNotCallNumber.objects.filter(organization=tenant.organization).count() == 1


def test_initiate_dials_nothing_and_holds_nothing_for_a_listed_number(
    tenant: Tenant, number
) -> None:
    tenant.client.post("/do-not-call", {"number": TO}, format="json")

    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": "+1 555 987 6543"},
        format="json",
    )

    assert response.status_code == 403
    assert response.json() == {
        "detail": "+15559876543 is on your organization's do-not-call list; the call was not "
        "placed."
    }
    assert not Call.objects.exists()
    assert Balance.objects.get(organization=tenant.organization).held_cents == 0
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["top_up"]


def test_the_refusal_is_replayed_for_the_same_idempotency_key(tenant: Tenant, number) -> None:
    tenant.client.post("/do-not-call", {"number": TO}, format="json")
    body = {"from_phone_number": "+15551234567", "to_phone_number": TO}

    first = tenant.client.post("/calls/initiate", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = tenant.client.post("/calls/initiate", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, again.status_code) == (403, 403)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.get().call is None
    assert not Call.objects.exists()


def test_another_organizations_list_does_not_stop_our_call(
    tenant: Tenant, outsider: Tenant, number
) -> None:
    outsider.client.post("/do-not-call", {"number": TO}, format="json")

    response = tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15551234567", "to_phone_number": TO},
        format="json",
    )

    assert response.status_code == 200


def test_the_check_other_dialling_paths_call(tenant: Tenant) -> None:
    org = tenant.organization.pk
    do_not_call_check(organization_id=org, number=TO)  # not listed: nothing raised
    DoNotCallNumber.objects.create(organization_id=org, number=TO, added_by="test")

    with pytest.raises(NumberOnDoNotCallList):
        do_not_call_check(organization_id=org, number=TO)


def test_a_csv_import_with_a_bad_line_adds_nothing_and_names_the_line(tenant: Tenant) -> None:
    text = "number,reason\n+15559876543,asked\nnot-a-number,x\n+15559876544,\n,\n"

    report = do_not_call_import_csv(
        organization_id=tenant.organization.pk, text=text, added_by="admin user ann"
    )

    assert report.errors == [
        "line 3: not-a-number must start with + and a country code",
        "line 5: an empty number must start with + and a country code",
    ]
    assert report.added == 0
    assert not DoNotCallNumber.objects.exists()


def test_a_good_csv_import_adds_every_number_once(tenant: Tenant) -> None:
    DoNotCallNumber.objects.create(
        organization=tenant.organization, number="+15559876544", added_by="API key test"
    )
    text = "Number,Reason\n+1 555 987 6543,asked\n+15559876544,\n"

    report = do_not_call_import_csv(
        organization_id=tenant.organization.pk, text=text, added_by="CSV import by ann"
    )

    assert (report.added, report.already_listed, report.errors) == (1, 1, [])
    assert dict(DoNotCallNumber.objects.values_list("number", "added_by")) == {
        "+15559876543": "CSV import by ann",
        "+15559876544": "API key test",
    }

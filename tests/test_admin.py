"""The admin pages load, and admin writes go through the services."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from billing.models import Balance, LedgerEntry
from billing.services import balance_hold_call
from burki.models import ApiKey
from calls.models import Call
from telephony.models import ProviderAccount
from tests.conftest import Tenant
from tests.factories import (
    ConversationFlowFactory,
    PhoneNumberFactory,
    ProviderAccountFactory,
)

AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"


@pytest.fixture
def admin_client(client, db):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def data(tenant: Tenant):
    number = PhoneNumberFactory(organization=tenant.organization, twilio=True)
    ConversationFlowFactory(organization=tenant.organization)
    tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": "+15550000000", "to_phone_number": "+15559876543"},
        format="json",
    )
    return number


@pytest.mark.parametrize(
    "model",
    [
        "burki/organization",
        "burki/apikey",
        "assistants/assistant",
        "assistants/conversationflow",
        "telephony/phonenumber",
        "telephony/provideraccount",
        "billing/balance",
        "billing/ledgerentry",
        "calls/call",
    ],
)
def test_every_list_and_add_page_loads(admin_client, data, model: str) -> None:
    app, name = model.split("/")
    listing = admin_client.get(reverse(f"admin:{app}_{name}_changelist"))
    assert listing.status_code == 200
    add = admin_client.get(reverse(f"admin:{app}_{name}_add"))
    assert add.status_code in (200, 403)  # 403: ledger and calls are never added by hand


def test_change_pages_load_and_never_show_a_secret(admin_client, data) -> None:
    account = data.provider_account
    for url in [
        reverse("admin:telephony_provideraccount_change", args=[account.pk]),
        reverse("admin:telephony_provideraccount_changelist"),
        reverse("admin:telephony_phonenumber_change", args=[data.pk]),
        reverse("admin:burki_organization_change", args=[data.organization_id]),
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200
        assert AUTH_TOKEN not in response.content.decode()


def test_a_provider_account_is_created_with_its_secret_encrypted(admin_client, tenant: Tenant):
    response = admin_client.post(
        reverse("admin:telephony_provideraccount_add"),
        {
            "organization": tenant.organization.pk,
            "provider": "twilio",
            "name": "Main Twilio",
            "twilio__account_sid": "AC" + "b" * 32,
            "twilio__auth_token": "a-brand-new-token",
        },
    )

    assert response.status_code == 302
    account = ProviderAccount.objects.get(name="Main Twilio")
    assert account.settings == {"account_sid": "AC" + "b" * 32}
    assert account.secrets == {"auth_token": "a-brand-new-token"}
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM telephony_provideraccount WHERE id = %s", [account.pk])
        stored = cursor.fetchone()[0]
    assert "a-brand-new-token" not in stored


def test_leaving_a_secret_blank_keeps_it(admin_client, tenant: Tenant) -> None:
    account = ProviderAccountFactory(organization=tenant.organization)

    response = admin_client.post(
        reverse("admin:telephony_provideraccount_change", args=[account.pk]),
        {
            "organization": tenant.organization.pk,
            "provider": "twilio",
            "name": "Renamed",
            "twilio__account_sid": "AC" + "c" * 32,
            "twilio__auth_token": "",
        },
    )

    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.name, account.settings["account_sid"]) == ("Renamed", "AC" + "c" * 32)
    assert account.secrets == {"auth_token": AUTH_TOKEN}


def test_a_new_account_without_its_secret_is_refused(admin_client, tenant: Tenant) -> None:
    response = admin_client.post(
        reverse("admin:telephony_provideraccount_add"),
        {
            "organization": tenant.organization.pk,
            "provider": "twilio",
            "name": "No token",
            "twilio__account_sid": "AC" + "b" * 32,
        },
    )

    assert response.status_code == 200
    assert "This field is required for this provider." in response.content.decode()
    assert not ProviderAccount.objects.filter(name="No token").exists()


def test_a_top_up_writes_a_ledger_row(admin_client, tenant: Tenant) -> None:
    balance = Balance.objects.get(organization=tenant.organization)

    response = admin_client.post(
        reverse("admin:billing_balance_top_up", args=[balance.pk]),
        {"amount": "25.00", "memo": "invoice 42"},
    )

    assert response.status_code == 302
    balance.refresh_from_db()
    assert balance.balance_cents == 12_500
    entry = LedgerEntry.objects.filter(organization=tenant.organization).first()
    assert (entry.kind, entry.amount_cents, entry.memo) == ("top_up", 2500, "invoice 42")


def test_the_ledger_shows_a_call_id_and_finds_its_rows_by_it(admin_client, tenant: Tenant) -> None:
    call_id = uuid.uuid4()
    balance_hold_call(
        organization_id=tenant.organization.pk,
        call_id=call_id,
        rate_cents_per_minute=10,
        max_seconds=60,
        max_open_holds=1,
        check_room=lambda: None,
    )
    url = reverse("admin:billing_ledgerentry_changelist")

    found = admin_client.get(url, {"q": str(call_id)[:13]})
    missed = admin_client.get(url, {"q": str(uuid.uuid4())})

    assert [(e.kind, e.call_id) for e in found.context["cl"].result_list] == [("hold", call_id)]
    assert str(call_id) in found.content.decode()
    assert list(missed.context["cl"].result_list) == []


def test_an_adjustment_below_the_held_amount_is_refused(admin_client, tenant: Tenant) -> None:
    balance = Balance.objects.get(organization=tenant.organization)
    Balance.objects.filter(pk=balance.pk).update(held_cents=9_000)

    response = admin_client.post(
        reverse("admin:billing_balance_top_up", args=[balance.pk]),
        {"amount": "-20.00", "memo": "refund"},
    )

    assert response.status_code == 200
    assert "below the held amount" in response.content.decode()
    balance.refresh_from_db()
    assert balance.balance_cents == 10_000


def test_the_admin_creates_an_api_key_and_shows_it_once(admin_client, tenant: Tenant) -> None:
    response = admin_client.post(
        reverse("admin:burki_organization_changelist"),
        {"action": "create_api_key", "_selected_action": [tenant.organization.pk]},
        follow=True,
    )

    page = response.content.decode()
    key = ApiKey.objects.filter(organization=tenant.organization, name="admin").get()
    raw = page.split("New API key for ")[1].split(": ", 1)[1].split(" ")[0]
    assert raw.startswith(key.prefix) and ApiKey.hash(raw) == key.hashed_key
    again = admin_client.get(reverse("admin:burki_apikey_change", args=[key.pk])).content.decode()
    assert raw not in again


def test_the_admin_revokes_a_key(admin_client, tenant: Tenant) -> None:
    key = ApiKey.objects.get(organization=tenant.organization)

    admin_client.post(
        reverse("admin:burki_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )

    assert tenant.client.get("/calls").status_code == 401


def test_calls_are_read_only_in_the_admin(admin_client, data) -> None:
    call = Call.objects.create(
        organization=data.organization,
        from_number="+15550000000",
        to_number="+15559876543",
        provider="sandbox",
        time_limit_seconds=60,
        rate_cents_per_minute=10,
        hold_cents=10,
    )
    url = reverse("admin:calls_call_change", args=[call.pk])

    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url, {"status": "completed"}).status_code == 403
    call.refresh_from_db()
    assert call.status == "queued"

"""Attaching Telnyx and Vonage numbers through the admin: account first, then the number."""

from __future__ import annotations

import pytest
from django.db import connection

from telephony.models import PhoneNumber, ProviderAccount
from telephony.providers import PROVIDERS, get_provider, provider_choices
from tests.factories import (
    AssistantFactory,
    OrganizationFactory,
    telnyx_public_key,
    vonage_private_key_pem,
)

ACCOUNTS = {
    "telnyx": (
        {"telnyx__connection_id": "1684641123236054244", "telnyx__public_key": "PUBLIC"},
        {"telnyx__api_key": "KEY-telnyx-admin-secret-0123456789"},
    ),
    "vonage": (
        {"vonage__application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"},
        {
            "vonage__private_key": "PRIVATE KEY",
            "vonage__signature_secret": "vonage-admin-signature-secret-0123456789",
        },
    ),
}


def form_values(provider: str) -> tuple[dict[str, str], dict[str, str]]:
    plain, secret = ACCOUNTS[provider]
    plain = {k: telnyx_public_key() if v == "PUBLIC" else v for k, v in plain.items()}
    secret = {k: vonage_private_key_pem() if v == "PRIVATE KEY" else v for k, v in secret.items()}
    return plain, secret


def raw_secrets_column(account: ProviderAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM telephony_provideraccount WHERE id = %s", [account.pk])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("provider", ["telnyx", "vonage"])
def test_an_account_is_added_with_its_secrets_encrypted_and_never_shown_again(
    admin_client, provider: str
) -> None:
    organization = OrganizationFactory()
    plain, secret = form_values(provider)

    response = admin_client.post(
        "/admin/telephony/provideraccount/add/",
        {
            "organization": organization.pk,
            "provider": provider,
            "name": f"Main {provider}",
            **plain,
            **secret,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    account = ProviderAccount.objects.get()
    assert account.settings == {k.split("__")[1]: v for k, v in plain.items()}
    assert account.secrets == {k.split("__")[1]: v for k, v in secret.items()}
    stored = raw_secrets_column(account)
    pages = [
        admin_client.get("/admin/telephony/provideraccount/").content.decode(),
        admin_client.get(f"/admin/telephony/provideraccount/{account.pk}/change/").content.decode(),
    ]
    for value in secret.values():
        assert value not in stored
        for page in pages:
            assert value not in page and value.replace("\n", "&#10;") not in page
    for value in plain.values():
        assert value in pages[1]


@pytest.mark.parametrize("provider", ["telnyx", "vonage"])
def test_an_account_without_its_credentials_is_refused(admin_client, provider: str) -> None:
    organization = OrganizationFactory()

    response = admin_client.post(
        "/admin/telephony/provideraccount/add/",
        {"organization": organization.pk, "provider": provider, "name": "Incomplete"},
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    plain, secret = form_values(provider)
    assert set(errors) == set(plain) | set(secret)
    assert ProviderAccount.objects.count() == 0


@pytest.mark.parametrize("provider", ["telnyx", "vonage"])
def test_a_number_is_attached_to_the_account_of_its_provider(admin_client, provider: str) -> None:
    organization = OrganizationFactory()
    assistant = AssistantFactory(organization=organization)
    plain, secret = form_values(provider)
    admin_client.post(
        "/admin/telephony/provideraccount/add/",
        {"organization": organization.pk, "provider": provider, "name": "Main", **plain, **secret},
    )
    account = ProviderAccount.objects.get()
    number = {
        "organization": organization.pk,
        "number": "+14155550123",  # the admin wants a number that can exist
        "label": "Outbound",
        "provider": provider,
        "provider_account": account.pk,
        "assistant": assistant.pk,
    }

    wrong = admin_client.post(
        "/admin/telephony/phonenumber/add/",
        {**number, "provider": "telnyx" if provider == "vonage" else "vonage"},
    )
    right = admin_client.post("/admin/telephony/phonenumber/add/", number)

    assert wrong.status_code == 200
    assert dict(wrong.context["adminform"].form.errors) == {
        "provider_account": [f"This is a {provider.title()} account."]
    }
    assert right.status_code == 302
    attached = PhoneNumber.objects.get()
    assert (attached.provider, attached.provider_account, attached.assistant) == (
        provider,
        account,
        assistant,
    )


def test_the_admin_offers_every_provider_by_its_registry_label() -> None:
    # The migrations name provider_choices, so its answer is part of the schema.
    assert provider_choices() == [
        ("sandbox", "Sandbox (test mode, no account, nothing is dialled)"),
        ("twilio", "Twilio"),
        ("telnyx", "Telnyx"),
        ("vonage", "Vonage"),
        ("sip", "BYO SIP trunk"),
    ]


def test_a_provider_takes_its_name_and_label_from_its_registry_row() -> None:
    # The label is how error sentences name it ("Unexpected error from Sandbox.").
    assert [(get_provider(name).name, get_provider(name).label) for name in PROVIDERS] == [
        ("sandbox", "Sandbox"),
        ("twilio", "Twilio"),
        ("telnyx", "Telnyx"),
        ("vonage", "Vonage"),
        ("sip", "BYO SIP trunk"),
    ]

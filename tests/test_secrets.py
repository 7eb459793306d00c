"""Secrets: encrypted at rest, rotated with a command, never logged, never shown back."""

from __future__ import annotations

import base64
import hmac
import logging
from unittest import mock

import pytest
import responses
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from burki.models import ApiKey
from calls.models import Call
from calls.services import call_settle_from_record
from telephony.models import ProviderAccount
from tests.conftest import Tenant, make_tenant
from tests.factories import PhoneNumberFactory, ProviderAccountFactory
from tests.settings import FIELD_ENCRYPTION_KEYS as TEST_KEYS
from tests.test_twilio import CALL_SID, twilio_created

TOKEN = "known-twilio-token-5f3c9a7e1d2b4c6a"
ACCOUNT_SID = "AC" + "b" * 32
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"


def stored_token(account: ProviderAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM telephony_provideraccount WHERE id = %s", [account.pk])
        return cursor.fetchone()[0]


class TestRotation:
    def test_rotate_secrets_re_encrypts_with_the_first_key(self, db, capsys) -> None:
        account = ProviderAccountFactory(secrets={"auth_token": TOKEN})
        ProviderAccountFactory(organization=account.organization, secrets={})
        old_token = stored_token(account)
        new_key = Fernet.generate_key().decode()

        with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, *TEST_KEYS]):
            call_command("rotate_secrets")

        assert capsys.readouterr().out == (
            "Re-encrypted 2 secret(s) with the first key of FIELD_ENCRYPTION_KEYS.\n"
        )
        rotated = stored_token(account)
        assert rotated != old_token
        assert TOKEN not in rotated
        assert (
            Fernet(new_key).decrypt(rotated.encode())
            == b'{"auth_token": "' + TOKEN.encode() + b'"}'
        )
        with pytest.raises(InvalidToken):
            Fernet(TEST_KEYS[0]).decrypt(rotated.encode())
        with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):  # the old key is gone now
            assert ProviderAccount.objects.get(pk=account.pk).secrets == {"auth_token": TOKEN}

    def test_without_rotation_removing_the_old_key_is_refused_loudly(self, db) -> None:
        account = ProviderAccountFactory(secrets={"auth_token": TOKEN})

        only_a_new_key = override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])
        with only_a_new_key, pytest.raises(ImproperlyConfigured, match="rotated"):
            ProviderAccount.objects.get(pk=account.pk)


def test_api_keys_are_stored_as_hashes_and_compared_in_constant_time(tenant: Tenant) -> None:
    api_key = ApiKey.objects.get(organization=tenant.organization)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM burki_apikey WHERE id = %s", [api_key.pk])
        row = cursor.fetchone()
    forged = tenant.api_key[: ApiKey.PREFIX_LENGTH] + "x" * 40

    with mock.patch("burki.authentication.hmac.compare_digest", wraps=hmac.compare_digest) as cmp:
        ok = tenant.client.get("/calls")
        refused = APIClient().get("/calls", HTTP_AUTHORIZATION=f"Bearer {forged}")

    assert not any(tenant.api_key in str(value) for value in row)
    assert (ok.status_code, refused.status_code) == (200, 401)
    assert cmp.call_args_list == [
        mock.call(api_key.hashed_key, ApiKey.hash(tenant.api_key)),
        mock.call(api_key.hashed_key, ApiKey.hash(forged)),
    ]


@pytest.mark.django_db
def test_no_secret_appears_in_any_log_response_or_admin_page(
    caplog, client, django_user_model
) -> None:
    # Everything at DEBUG, the SDKs included, though production keeps them at WARNING.
    caplog.set_level(logging.DEBUG)
    for name in ("twilio", "urllib3", "django", "calls", "telephony"):
        caplog.set_level(logging.DEBUG, logger=name)
    seen: list[str] = []

    def keep(response):
        seen.append(response.content.decode(errors="replace"))
        return response

    tenant = make_tenant()
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    created = keep(
        client.post(
            "/admin/telephony/provideraccount/add/",
            {
                "organization": tenant.organization.pk,
                "provider": "twilio",
                "name": "Main",
                "twilio__account_sid": ACCOUNT_SID,
                "twilio__auth_token": TOKEN,
            },
            follow=True,
        )
    )
    assert created.status_code == 200
    account = ProviderAccount.objects.get(name="Main")
    assert account.secrets == {"auth_token": TOKEN}
    PhoneNumberFactory(
        organization=tenant.organization,
        number="+15551234567",
        provider="twilio",
        provider_account=account,
    )
    body = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}

    with responses.RequestsMock() as twilio:
        twilio.post(CALLS_URL, json=twilio_created(), status=201)
        twilio.post(
            CALLS_URL,
            json={"code": 20003, "message": "Authenticate", "status": 401},
            status=401,
        )
        placed = keep(tenant.client.post("/calls/initiate", body, format="json"))
        keep(tenant.client.post("/calls/initiate", body, format="json", HTTP_IDEMPOTENCY_KEY="k"))
        keep(tenant.client.post("/calls/initiate", body, format="json", HTTP_IDEMPOTENCY_KEY="k"))
        sent_authorization = twilio.calls[0].request.headers["Authorization"]
    assert placed.status_code == 200
    call_id = placed.json()["call_id"]

    from tests.test_twilio import signed_post

    webhook = f"/webhooks/calls/{call_id}/status"
    plain = APIClient()
    keep(signed_post(plain, f"/webhooks/calls/{call_id}/answer", {"CallSid": CALL_SID}, TOKEN))
    keep(plain.post(webhook, {"CallSid": CALL_SID, "CallStatus": "completed"}))  # forged
    completed = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "42"}
    keep(signed_post(plain, webhook, completed, TOKEN))
    with responses.RequestsMock() as twilio:  # the worker settles it on Twilio's record
        record = {"sid": CALL_SID, "status": "completed", "duration": "42"}
        twilio.get(CALLS_URL.replace(".json", f"/{CALL_SID}.json"), json=record)
        assert call_settle_from_record(call_id=Call.objects.get(pk=call_id).pk)
    keep(tenant.client.get(f"/calls/{call_id}"))
    keep(tenant.client.get("/calls"))
    keep(APIClient().get("/calls", HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}x"))
    for page in [
        "/admin/telephony/provideraccount/",
        f"/admin/telephony/provideraccount/{account.pk}/change/",
        "/admin/telephony/phonenumber/",
        "/admin/burki/apikey/",
        f"/admin/burki/apikey/{ApiKey.objects.get(organization=tenant.organization).pk}/change/",
        f"/admin/burki/organization/{tenant.organization.pk}/change/",
        "/admin/calls/call/",
        f"/admin/calls/call/{call_id}/change/",
        "/admin/billing/ledgerentry/",
        "/admin/billing/balance/",
    ]:
        assert keep(client.get(page)).status_code == 200, page

    secrets = {
        "api key": tenant.api_key,
        "auth token": TOKEN,
        "basic credentials": base64.b64encode(f"{ACCOUNT_SID}:{TOKEN}".encode()).decode(),
        "encryption key": TEST_KEYS[0],
    }
    assert sent_authorization == "Basic " + secrets["basic credentials"]  # it was really used
    assert Call.objects.get(pk=call_id).cost_cents == 7
    logs = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert "twilio" in logs.lower() and len(caplog.records) > 10  # the logs were captured
    for name, secret in secrets.items():
        assert secret not in logs, f"the {name} was logged"
        for content in seen:
            assert secret not in content, f"the {name} was shown"
    assert TOKEN not in stored_token(account)

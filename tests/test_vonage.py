"""What only Vonage does: its event statuses and its JWT's claims (the rest is in
test_provider_conformance)."""

from __future__ import annotations

import hashlib
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from billing.models import Balance, LedgerEntry
from calls.models import Call, CallEvent
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import VONAGE_SIGNATURE_SECRET, vonage_private_key, vonage_private_key_pem
from tests.test_provider_conformance import (
    VonageDriver,
    Webhook,
    initiate,
    send,
    settle_on_the_record,
    signed,
)

vonage = VonageDriver()


def vonage_pkcs1_pem() -> str:
    """The same key in the older PKCS#1 form (-----BEGIN RSA PRIVATE KEY-----)."""
    return (
        vonage_private_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )


@pytest.fixture
def placed(tenant: Tenant) -> Call:
    vonage.number(tenant)
    with vonage.wire() as wire:
        vonage.accept(wire)
        response = initiate(tenant)
    return Call.objects.get(pk=response.json()["call_id"])


def event(status: str, **extra: str) -> Webhook:
    body = {"uuid": vonage.call_uuid, "status": status, "direction": "outbound", **extra}
    return Webhook(body=json.dumps(body).encode(), content_type="application/json")


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("busy", "busy"),
        ("timeout", "no-answer"),
        ("unanswered", "no-answer"),
        ("cancelled", "canceled"),
        ("failed", "failed"),
        ("rejected", "failed"),
    ],
)
def test_an_unconnected_call_ends_by_its_status_and_costs_nothing(
    client, tenant: Tenant, placed: Call, status: str, state: str
) -> None:
    response = signed(client, vonage, f"/webhooks/calls/{placed.pk}/status", event(status))

    assert response.json() == {"detail": "Applied."}
    settle_on_the_record(vonage, placed, state=state)
    placed.refresh_from_db()
    assert (placed.status, placed.end_reason, placed.cost_cents) == (state, status, 0)
    assert_money_consistent(tenant.organization)


def test_the_failure_detail_is_kept_as_the_reason(client, placed: Call) -> None:
    webhook = event("failed", detail="invalid_number")

    signed(client, vonage, f"/webhooks/calls/{placed.pk}/status", webhook)

    placed.refresh_from_db()
    assert (placed.status, placed.end_reason) == ("failed", "failed: invalid_number")
    assert CallEvent.objects.get(call=placed).detail == {
        "status": "failed",
        "detail": "invalid_number",
    }


@pytest.mark.parametrize("status", ["human", "machine", "disconnected", "input", "record"])
def test_events_that_are_no_lifecycle_change_are_acknowledged(
    client, placed: Call, status: str
) -> None:
    response = signed(client, vonage, f"/webhooks/calls/{placed.pk}/status", event(status))

    # A verdict is machine detection's, which this call did not ask for.
    expected = (
        "Ignored: the call did not ask for machine detection."
        if status in ("human", "machine")
        else "Ignored: no lifecycle change."
    )
    assert response.json() == {"detail": expected}
    placed.refresh_from_db()
    assert (placed.status, placed.answered_by) == ("initiated", None)
    assert CallEvent.objects.count() == 0


def everything_about(call: Call) -> tuple[object, ...]:
    """The call's row, its timeline, and its organization's ledger and balance."""
    call.refresh_from_db()
    organization = call.organization_id
    return (
        {field.attname: getattr(call, field.attname) for field in Call._meta.concrete_fields},
        list(CallEvent.objects.filter(call=call).order_by("id").values()),
        list(LedgerEntry.objects.filter(organization=organization).order_by("id").values()),
        Balance.objects.filter(organization=organization).values().get(),
    )


@pytest.mark.parametrize(
    ("before", "status"),
    [("completed", "completed"), ("answered", "answered")],
    ids=["a-completed-call", "an-answered-call"],
)
def test_a_duration_that_is_a_digit_but_no_number_is_acknowledged_and_changes_nothing(
    client, tenant: Tenant, placed: Call, before: str, status: str
) -> None:
    # "²" passes str.isdigit(), which int() then refuses.
    path = f"/webhooks/calls/{placed.pk}/status"
    signed(client, vonage, path, event(before, duration="60"))
    then = everything_about(placed)
    # A crash must read as the answer Vonage would get, not as an exception in the test.
    client.raise_request_exception = False

    response = signed(client, vonage, path, event(status, duration="²"))

    assert (response.status_code, response.json()) == (
        200,
        {"detail": "Ignored: already applied."},
    )
    assert everything_about(placed) == then
    assert_money_consistent(tenant.organization)


def token(claims: dict) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, VONAGE_SIGNATURE_SECRET, "HS256")}


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iat": "now"}, id="no-payload-hash"),
        pytest.param({"payload_hash": "body"}, id="no-iat"),
        pytest.param({"iat": "future", "payload_hash": "body"}, id="issued-in-the-future"),
    ],
)
def test_a_token_missing_what_binds_it_to_this_delivery_is_a_403(
    client, placed: Call, claims: dict
) -> None:
    webhook = event("completed", duration="60")
    now = int(time.time())
    values = {
        "now": now,
        "future": now + 600,
        "body": hashlib.sha256(webhook.body).hexdigest(),
    }

    response = send(
        client,
        f"/webhooks/calls/{placed.pk}/status",
        webhook,
        token({key: values[value] for key, value in claims.items()}),
    )

    assert response.status_code == 403
    placed.refresh_from_db()
    assert placed.status == "initiated"


def test_an_unsigned_token_alg_none_is_a_403(client, placed: Call) -> None:
    webhook = event("completed", duration="60")
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(webhook.body).hexdigest()}
    forged = jwt.encode(claims, None, algorithm="none")

    response = send(
        client,
        f"/webhooks/calls/{placed.pk}/status",
        webhook,
        {"Authorization": f"Bearer {forged}"},
    )

    assert response.status_code == 403
    placed.refresh_from_db()
    assert placed.status == "initiated"


@pytest.mark.parametrize(
    ("private_key", "detail"),
    [
        ("/etc/hostname.key", "The Vonage account's private key is not a PEM key."),
        (
            vonage_pkcs1_pem(),
            "The Vonage account's private key must be PKCS#8.",
        ),
    ],
    ids=["a-path", "pkcs1"],
)
def test_an_account_with_an_unusable_private_key_fails_the_call_cleanly(
    tenant: Tenant, private_key: str, detail: str
) -> None:
    number = vonage.number(tenant)
    number.provider_account.secrets = {
        **number.provider_account.secrets,
        "private_key": private_key,
    }
    number.provider_account.save()
    with vonage.wire() as wire:
        vonage.accept(wire)
        response = initiate(tenant)

    assert (response.status_code, response.json()) == (502, {"detail": detail})
    assert wire.sent == []
    call = Call.objects.get()
    assert (call.status, call.error) == ("failed", detail)
    assert_money_consistent(tenant.organization)


def test_a_body_sent_with_whitespace_verifies_against_its_compact_hash(
    client, tenant: Tenant, placed: Call
) -> None:
    # Vonage hashes the event as compact JSON; the bytes on the wire may be spaced out.
    event = {"uuid": vonage.call_uuid, "status": "completed", "duration": "61"}
    compact = json.dumps(event, separators=(",", ":")).encode()
    spaced = Webhook(body=json.dumps(event, indent=2).encode(), content_type="application/json")
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(compact).hexdigest()}

    response = send(client, f"/webhooks/calls/{placed.pk}/status", spaced, token(claims))

    assert response.json() == {"detail": "Applied."}
    placed.refresh_from_db()
    assert (placed.status, placed.duration_seconds) == ("completed", 61)  # as it reported
    settle_on_the_record(vonage, placed, talked=61)
    placed.refresh_from_db()
    assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 61, 11)
    assert_money_consistent(tenant.organization)


def test_a_thread_keeps_its_client_per_account_and_never_shares_one() -> None:
    """A new SDK client per call opened a TLS connection per call (the client's own requests
    session). A thread now keeps one per account; another thread, or another account, never
    gets the same one (the SDK keeps the Authorization header on the client)."""
    import threading

    from telephony.providers import get_provider
    from telephony.providers.base import Account

    vonage = get_provider("vonage")
    pem = vonage_private_key_pem()

    def account(application_id: str) -> Account:
        return Account(
            settings={"application_id": application_id},
            secrets={"private_key": pem, "signature_secret": "s"},
        )

    acme, globex = account("app-acme"), account("app-globex")
    here = [vonage.voice(acme) for _ in range(5)]
    other_account = vonage.voice(globex)
    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(vonage.voice(acme)))
    thread.start()
    thread.join()

    assert len({id(voice) for voice in here}) == 1
    sessions = {id(v.http_client._session) for v in (here[0], other_account, elsewhere[0])}
    assert len(sessions) == 3

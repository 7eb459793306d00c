"""SIP trunks (admin, validation, secrets) and the `sip` provider's side of the control channel.

The calls themselves, with a real agent and SIPp, are in test_sip_calls.py.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from billing.models import Balance
from calls.models import Call
from telephony.models import SipTrunk
from telephony.sip import control as sip_control
from telephony.sip.numbers import format_number, parse_gateway
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory, SipTrunkFactory
from tests.settings import FIELD_ENCRYPTION_KEYS as TEST_KEYS
from tests.sip_harness import ROOT

FROM = "+15551234567"
TO = "+15559876543"
CONTROL = "127.0.0.1:25075"


def raw_password_column(trunk: SipTrunk) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM telephony_siptrunk WHERE id = %s", [trunk.pk])
        return cursor.fetchone()[0]


def trunk_form(organization_id: int, **overrides: object) -> dict[str, object]:
    return {
        "organization": organization_id,
        "name": "Carrier",
        "gateway": "sip.carrier.test:5060",
        "transport": "udp",
        "username": "alice",
        "new_password": "",
        "priority": 10,
        "enabled": "on",
        "caller_id_format": "e164",
        **overrides,
    }


def test_the_admin_stores_the_password_encrypted_and_never_shows_it(
    admin_client, tenant: Tenant
) -> None:
    form = trunk_form(tenant.organization.pk, new_password="pa55-word-xyz")

    response = admin_client.post("/admin/telephony/siptrunk/add/", form)

    assert response.status_code == 302, response.content
    trunk = SipTrunk.objects.get()
    assert trunk.password == "pa55-word-xyz"
    assert "pa55-word-xyz" not in raw_password_column(trunk)
    assert raw_password_column(trunk).startswith("gAAAA")  # a Fernet token
    change_page = admin_client.get(f"/admin/telephony/siptrunk/{trunk.pk}/change/")
    list_page = admin_client.get("/admin/telephony/siptrunk/")
    assert change_page.status_code == list_page.status_code == 200
    assert b"pa55-word-xyz" not in change_page.content
    assert b"pa55-word-xyz" not in list_page.content
    assert raw_password_column(trunk).encode() not in change_page.content


def test_a_blank_password_on_edit_keeps_the_stored_one(admin_client, tenant: Tenant) -> None:
    trunk = SipTrunkFactory(organization=tenant.organization, name="Carrier", password="old-pw")

    response = admin_client.post(
        f"/admin/telephony/siptrunk/{trunk.pk}/change/",
        trunk_form(tenant.organization.pk, gateway="10.0.0.5:5080"),
    )

    assert response.status_code == 302, response.content
    trunk.refresh_from_db()
    assert (trunk.gateway, trunk.password) == ("10.0.0.5:5080", "old-pw")


def test_the_admin_can_clear_the_password(admin_client, tenant: Tenant) -> None:
    trunk = SipTrunkFactory(organization=tenant.organization, name="Carrier", password="old-pw")

    admin_client.post(
        f"/admin/telephony/siptrunk/{trunk.pk}/change/",
        trunk_form(tenant.organization.pk, clear_password="on"),
    )

    trunk.refresh_from_db()
    assert (trunk.password, raw_password_column(trunk)) == ("", "")


def test_the_admin_rejects_a_malformed_gateway(admin_client, tenant: Tenant) -> None:
    response = admin_client.post(
        "/admin/telephony/siptrunk/add/",
        trunk_form(tenant.organization.pk, gateway="sip carrier:99999"),
    )

    assert response.status_code == 200
    assert b"Write the gateway as host[:port]" in response.content
    assert not SipTrunk.objects.exists()


@pytest.mark.parametrize(
    ("gateway", "parsed"),
    [
        ("sip.carrier.test", ("sip.carrier.test", None)),
        ("sip.carrier.test:5080", ("sip.carrier.test", 5080)),
        ("192.0.2.10:5060", ("192.0.2.10", 5060)),
        ("[2001:db8::1]:5060", ("2001:db8::1", 5060)),
    ],
)
def test_gateways_are_host_and_optional_port(gateway: str, parsed: tuple) -> None:
    assert parse_gateway(gateway) == parsed


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        (":5060", "Write the gateway as host[:port], e.g. sip.example.net:5060."),
        ("sip:carrier.test", "The gateway's port must be a number from 1 to 65535."),
        ("carrier.test:0", "The gateway's port must be a number from 1 to 65535."),
        ("[not-v6]:5060", "The bracketed part must be an IPv6 address."),
        ("bad host:5060", "Write the gateway as host[:port], e.g. sip.example.net:5060."),
    ],
)
def test_a_malformed_gateway_is_refused_with_a_sentence(
    tenant: Tenant, gateway: str, message: str
) -> None:
    trunk = SipTrunk(organization=tenant.organization, name="x", gateway=gateway)

    with pytest.raises(ValidationError) as error:
        trunk.full_clean()

    assert error.value.message_dict["gateway"] == [message]


@pytest.mark.parametrize(
    ("caller_id_format", "written"),
    [("e164", "+15551234567"), ("digits", "15551234567"), ("national", "5551234567")],
)
def test_numbers_are_written_in_the_trunks_format(caller_id_format: str, written: str) -> None:
    assert format_number(FROM, caller_id_format) == written


def test_a_sip_number_needs_a_trunk_but_no_provider_account(tenant: Tenant) -> None:
    number = PhoneNumberFactory(
        organization=tenant.organization, number="+442071838750", provider="sip"
    )
    with pytest.raises(ValidationError) as error:
        number.full_clean()
    assert error.value.message_dict == {
        "provider": ["Add an enabled SIP trunk for the organization first."]
    }

    SipTrunkFactory(organization=tenant.organization)

    number.full_clean()


def silent_agent() -> tuple[socket.socket, threading.Event]:
    """A listener that takes the request and never answers (a wedged agent)."""
    server = socket.create_server(("127.0.0.1", 25076))
    done = threading.Event()

    def accept() -> None:
        conn, _ = server.accept()
        done.wait(10)
        conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return server, done


def test_an_agent_that_does_not_answer_in_time_is_a_504(tenant: Tenant, settings) -> None:
    settings.SIP_AGENTS = ["127.0.0.1:25076", "127.0.0.1:25077"]
    settings.SIP_AGENT_TIMEOUT_SECONDS = 0.5
    PhoneNumberFactory(organization=tenant.organization, number=FROM, provider="sip")
    server, done = silent_agent()
    try:
        response = tenant.client.post(
            "/calls/initiate", {"from_phone_number": FROM, "to_phone_number": TO}, format="json"
        )
    finally:
        done.set()
        server.close()

    call = Call.objects.get()
    assert response.status_code == 504
    assert response.json() == {
        "detail": "The telephony provider did not answer in time; the call may have been "
        "placed. Follow it at GET /calls/{call_id}.",
        "call_id": str(call.pk),
    }
    # The agent may have dialled: the call is kept, with its hold, for the agent to report.
    assert (call.status, call.error, call.cost_cents) == (
        "unknown",
        "The SIP agent did not answer in time; it may have placed the call.",
        None,
    )
    assert Balance.objects.get(organization=tenant.organization).held_cents == call.hold_cents
    assert_money_consistent(tenant.organization)


@pytest.fixture
def control_server(settings):
    settings.SIP_AGENT_SECRET = "right-secret"
    seen: list[dict] = []

    def handler(payload: dict) -> dict:
        seen.append(payload)
        return {"ok": True, "call_sid": "abc"}

    server = sip_control.ControlServer(CONTROL, handler, "right-secret")
    server.start()
    yield seen
    server.shutdown()
    server.server_close()


def test_the_control_channel_carries_the_secret_but_hands_it_to_no_handler(
    control_server,
) -> None:
    answer = sip_control.request(CONTROL, {"op": "status"}, timeout=2)

    assert answer == {"ok": True, "call_sid": "abc"}
    assert control_server == [{"op": "status"}]


def test_the_control_channel_refuses_a_wrong_secret(control_server, settings) -> None:
    settings.SIP_AGENT_SECRET = "wrong-secret"

    answer = sip_control.request(CONTROL, {"op": "dial"}, timeout=2)

    assert answer == {"ok": False, "error": "unauthorized", "detail": "Wrong secret."}
    assert control_server == []


def test_the_control_channel_refuses_what_is_not_json(control_server) -> None:
    with socket.create_connection(("127.0.0.1", 25075)) as sock:
        sock.sendall(b"DIAL +15559876543\n")
        answer = sock.makefile("rb").readline()

    assert answer == b'{"ok": false, "error": "bad_request", "detail": "Send one JSON object."}\n'
    assert control_server == []


def test_web_code_never_loads_the_sip_stack() -> None:
    script = (
        "import django, sys; django.setup();"
        "import burki.urls, calls.services, telephony.admin;"
        "from telephony.providers import get_provider; get_provider('sip');"
        "print('pjsua2' in sys.modules)"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "False"


def test_the_demo_refuses_a_malformed_sip_gateway(db) -> None:
    with pytest.raises(CommandError, match=r"--sip-gateway: Write the gateway as host\[:port\]"):
        call_command("seed_demo", "--json", "--sip-gateway", "not a host")

    assert not SipTrunk.objects.exists()


def test_the_demo_gives_acme_a_sip_number_on_a_trunk(db) -> None:
    out = io.StringIO()

    call_command("seed_demo", "--json", "--sip-gateway", "127.0.0.1:25060", stdout=out)

    demo = json.loads(out.getvalue())
    trunk = SipTrunk.objects.get()
    number = trunk.organization.phone_numbers.get(number=demo["sip_phone_number"])
    assert (trunk.organization.name, trunk.gateway, trunk.enabled) == (
        "Acme",
        "127.0.0.1:25060",
        True,
    )
    assert (number.provider, number.assistant.name) == ("sip", "Acme SIP")


def test_rotating_the_encryption_keys_re_encrypts_sip_passwords(tenant: Tenant, capsys) -> None:
    trunk = SipTrunkFactory(organization=tenant.organization, password="trunk-pw-7c1e")
    SipTrunkFactory(organization=tenant.organization, password="")  # nothing to rotate
    old_token = raw_password_column(trunk)
    new_key = Fernet.generate_key().decode()

    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, *TEST_KEYS]):
        call_command("rotate_secrets")

    assert capsys.readouterr().out == (
        "Re-encrypted 1 secret(s) with the first key of FIELD_ENCRYPTION_KEYS.\n"
    )
    rotated = raw_password_column(trunk)
    assert rotated != old_token
    assert Fernet(new_key).decrypt(rotated.encode()) == b"trunk-pw-7c1e"
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):  # the old key is gone now
        assert SipTrunk.objects.get(pk=trunk.pk).password == "trunk-pw-7c1e"

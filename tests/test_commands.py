from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings
from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey, Organization
from calls.management.commands.place_test_call import OPTIONS
from calls.management.commands.place_test_call import Command as PlaceTestCall
from calls.models import Call
from telephony.models import PhoneNumber
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import AssistantFactory, PhoneNumberFactory

DEMO_KEYS = {
    "api_key",
    "from_phone_number",
    "assistant_id",
    "other_assistant_id",
    "flow_phone_number",
    "flow_base_assistant_id",
    "unassigned_phone_number",
    "foreign_phone_number",
    "foreign_assistant_id",
    "broke_api_key",
    "broke_phone_number",
}


DEMO_LOGINS = {"admin_username", "admin_password", "member_username", "member_password"}
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


class TestPlaceTestCall:
    def test_it_places_a_call_through_the_same_service(self, tenant: Tenant) -> None:
        number = PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

        out = run(
            "place_test_call",
            "--from",
            "+15551234567",
            "--to",
            "+15559876543",
            "--welcome",
            "Hi {{name}}",
            "--var",
            "name=Ann",
        )

        result = json.loads(out)
        call = Call.objects.get()
        assert result["call_id"] == str(call.pk)
        assert result["call_sid"] == call.call_sid
        assert (result["message"], result["welcome_message"]) == (
            "Call initiated successfully",
            "Hi Ann",
        )
        assert call.assistant == number.assistant
        assert_money_consistent(tenant.organization)

    def test_it_honours_an_assistant_override(self, tenant: Tenant) -> None:
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
        other = AssistantFactory(organization=tenant.organization)

        run(
            "place_test_call",
            "--from",
            "+15551234567",
            "--to",
            "+15559876543",
            "--assistant",
            str(other.pk),
        )

        assert Call.objects.get().assistant == other

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["--from", "555", "--to", "+15559876543"],
                "--from must be a phone number in E.164 format, e.g. +15551234567",
            ),
            (
                ["--from", "+15550000000", "--to", "+15559876543"],
                "--from +15550000000: no organization has this number. Add it in the admin "
                "(Telephony → Phone numbers) first.",
            ),
            (
                ["--from", "+15551234567", "--to", "+15559876543", "--welcome", "{{x}}"],
                "Variable 'x'",
            ),
            (
                ["--from", "+15551234567", "--to", "+15559876543", "--var", "novalue"],
                "--var takes NAME=VALUE, not 'novalue'",
            ),
        ],
    )
    def test_errors_are_sentences_for_a_command_line(self, tenant: Tenant, args, message):
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

        with pytest.raises(CommandError) as raised:
            run("place_test_call", *args)

        assert str(raised.value).startswith(message)  # the sentence alone, no status code
        assert Call.objects.count() == 0

    def test_an_assistant_of_another_organization_is_refused(self, tenant, outsider) -> None:
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
        foreign = AssistantFactory(organization=outsider.organization)

        with pytest.raises(CommandError) as raised:
            run(
                "place_test_call",
                "--from",
                "+15551234567",
                "--to",
                "+15559876543",
                "--assistant",
                str(foreign.pk),
            )

        assert str(raised.value) == (
            f"--assistant {foreign.pk}: {tenant.organization} (which owns +15551234567) has no "
            "assistant with this id."
        )

    def test_a_broke_organization_gets_the_402_sentence(self, db) -> None:
        from tests.conftest import make_tenant

        broke = make_tenant(balance_cents=0)
        PhoneNumberFactory(organization=broke.organization, number="+15551234567")

        with pytest.raises(CommandError) as raised:
            run("place_test_call", "--from", "+15551234567", "--to", "+15559876543")

        assert str(raised.value) == (
            "Insufficient balance. Please add funds to continue making calls."
        )

    def test_its_help_describes_every_option(self) -> None:
        parser = PlaceTestCall().create_parser("manage.py", "place_test_call")
        ours = [a for a in parser._actions if a.dest in OPTIONS or a.dest == "agenda"]

        assert sorted(a.option_strings[0] for a in ours) == sorted(OPTIONS.values())
        for action in ours:
            assert action.help and len(action.help) > 20, action.dest
        assert "repeat" in next(a.help for a in ours if a.dest == "variables")

    def test_it_runs_as_the_readme_writes_it(self, tmp_path) -> None:
        readme = (ROOT / "README.md").read_text()
        found = re.search(
            r"^DEBUG=true \.venv/bin/python manage\.py place_test_call .*\n.*", readme, re.M
        )
        assert found, "the README's place_test_call line"
        words = shlex.split(found.group(0).replace("\\\n", " "), comments=True)
        assert words[:3] == ["DEBUG=true", ".venv/bin/python", "manage.py"]
        unset = ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.pop("FIELD_ENCRYPTION_KEYS", None)
        env.update(
            DEBUG="true",
            DATABASE_URL=f"sqlite:///{tmp_path}/demo.sqlite3",
            CELERY_BROKER_URL="memory://",
        )
        manage = [str(ROOT / ".venv/bin/python"), str(ROOT / "manage.py")]
        for setup in (["migrate", "-v0"], ["seed_demo", "--json"]):
            subprocess.run([*manage, *setup], check=True, env=env, capture_output=True)  # noqa: S603

        placed = subprocess.run(  # noqa: S603 (the README's own words)
            [*manage, *words[3:]], env=env, cwd=ROOT, capture_output=True, text=True
        )

        assert placed.returncode == 0, placed.stderr
        result = json.loads(placed.stdout)
        assert (result["message"], result["welcome_message"]) == (
            "Call initiated successfully",
            "Hi Ann",
        )


class TestSeedDemo:
    def test_it_prints_exactly_the_documented_keys(self, db) -> None:
        data = json.loads(run("seed_demo", "--json"))

        assert set(data) == DEMO_KEYS
        assert not User.objects.exists()  # no logins with known passwords outside DEBUG

    @override_settings(DEBUG=True)
    def test_in_debug_it_gives_an_operator_and_an_acme_owner_their_logins(self, db) -> None:
        first = json.loads(run("seed_demo", "--json"))
        data = json.loads(run("seed_demo", "--json"))

        assert set(data) == DEMO_KEYS | DEMO_LOGINS
        assert data["admin_password"] != first["admin_password"]
        operator = authenticate(username=data["admin_username"], password=data["admin_password"])
        owner = authenticate(username=data["member_username"], password=data["member_password"])
        assert operator is not None and operator.is_superuser
        assert owner is not None and owner.is_staff and not owner.is_superuser
        assert [(m.organization.name, m.role) for m in owner.memberships.all()] == [
            ("Acme", "owner")
        ]
        assert authenticate(username="acme-owner", password=first["member_password"]) is None

    def test_it_is_idempotent_and_gives_a_fresh_key(self, db) -> None:
        first = json.loads(run("seed_demo", "--json"))
        second = json.loads(run("seed_demo", "--json"))

        assert {k: v for k, v in first.items() if "api_key" not in k} == {
            k: v for k, v in second.items() if "api_key" not in k
        }
        assert first["api_key"] != second["api_key"]
        assert Organization.objects.count() == 3
        assert PhoneNumber.objects.count() == 5
        assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 2
        acme = Organization.objects.get(name="Acme")
        assert LedgerEntry.objects.filter(organization=acme, kind="top_up").count() == 1

    def test_the_seed_examples_and_every_documented_error_work_on_the_demo(self, db) -> None:
        demo = json.loads(run("seed_demo", "--json"))
        acme, broke, anonymous = APIClient(), APIClient(), APIClient()
        acme.credentials(HTTP_AUTHORIZATION=f"Bearer {demo['api_key']}")
        broke.credentials(HTTP_AUTHORIZATION=f"Bearer {demo['broke_api_key']}")
        to = "+15559876543"

        def initiate(client: APIClient, **body: object):
            return client.post("/calls/initiate", body, format="json")

        basic = initiate(acme, from_phone_number=demo["from_phone_number"], to_phone_number=to)
        variables = initiate(
            acme,
            from_phone_number=demo["from_phone_number"],
            to_phone_number=to,
            welcome_message="Hello {{name}}, this is a reminder about your appointment "
            "tomorrow at {{time}}.",
            agenda="Remind {{name}} about their upcoming {{appointment_type}} appointment.",
            variables={"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
        )
        override = initiate(
            acme,
            from_phone_number=demo["from_phone_number"],
            to_phone_number=to,
            assistant_id=demo["other_assistant_id"],
            welcome_message="Hi there! I'm calling about your recent inquiry.",
        )
        flow = initiate(acme, from_phone_number=demo["flow_phone_number"], to_phone_number=to)

        for response in (basic, variables, override, flow):
            assert response.status_code == 200
            assert response.json()["message"] == "Call initiated successfully"
            assert response.json()["call_sid"]
        shown = acme.get(f"/calls/{variables.json()['call_id']}").json()
        assert shown["welcome_message"] == (
            "Hello John Doe, this is a reminder about your appointment tomorrow at 10 AM."
        )
        assert (
            Call.objects.get(pk=flow.json()["call_id"]).assistant_id
            == demo["flow_base_assistant_id"]
        )

        errors = [
            (initiate(acme, to_phone_number=to), 400, "from_phone_number is required"),
            (
                initiate(
                    anonymous, from_phone_number=demo["from_phone_number"], to_phone_number=to
                ),
                401,
                "Authentication credentials were not provided.",
            ),
            (
                initiate(broke, from_phone_number=demo["broke_phone_number"], to_phone_number=to),
                402,
                "Insufficient balance. Please add funds to continue making calls.",
            ),
            (
                initiate(acme, from_phone_number=demo["foreign_phone_number"], to_phone_number=to),
                403,
                f"Unauthorized: phone number {demo['foreign_phone_number']} "
                "does not belong to your organization",
            ),
            (
                initiate(
                    acme,
                    from_phone_number=demo["from_phone_number"],
                    to_phone_number=to,
                    assistant_id=demo["foreign_assistant_id"],
                ),
                403,
                f"Unauthorized: assistant {demo['foreign_assistant_id']} "
                "does not belong to your organization",
            ),
            (
                initiate(
                    acme, from_phone_number=demo["unassigned_phone_number"], to_phone_number=to
                ),
                404,
                f"No assistant found for phone number {demo['unassigned_phone_number']}",
            ),
        ]
        for response, status, detail in errors:
            assert (response.status_code, response.json()["detail"]) == (status, detail)
        assert Call.objects.count() == 4
        initech = Organization.objects.get(name="Initech")
        assert Balance.objects.get(organization=initech).balance_cents == 0
        for org in Organization.objects.all():
            assert_money_consistent(org)

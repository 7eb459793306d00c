from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from billing.models import Balance, LedgerEntry
from burki.models import ApiKey, Organization
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
            (["--from", "555", "--to", "+15559876543"], "from_phone_number must be a phone"),
            (
                ["--from", "+15550000000", "--to", "+15559876543"],
                "Unauthorized: phone number +15550000000 does not belong",
            ),
            (
                ["--from", "+15551234567", "--to", "+15559876543", "--welcome", "{{x}}"],
                "Variable 'x'",
            ),
            (["--from", "+15551234567", "--to", "+15559876543", "--var", "novalue"], "--var takes"),
        ],
    )
    def test_errors_are_the_apis_sentences_with_a_failing_exit(self, tenant: Tenant, args, message):
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
            f"Unauthorized: assistant {foreign.pk} does not belong to your organization"
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


class TestSeedDemo:
    def test_it_prints_exactly_the_documented_keys(self, db) -> None:
        data = json.loads(run("seed_demo", "--json"))

        assert set(data) == DEMO_KEYS

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

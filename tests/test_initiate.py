"""POST /calls/initiate against the public contract, on the sandbox provider."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from billing.models import Balance, LedgerEntry
from calls.models import Call
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import (
    AssistantFactory,
    ConversationFlowFactory,
    PhoneNumberFactory,
)

URL = "/calls/initiate"
TO = "+15559876543"


def post(tenant: Tenant, body: object, **kwargs: object):
    return tenant.client.post(URL, body, format="json", **kwargs)


def assert_nothing_written(tenant: Tenant) -> None:
    assert Call.objects.filter(organization=tenant.organization).count() == 0
    assert Balance.objects.get(organization=tenant.organization).held_cents == 0
    assert list(
        LedgerEntry.objects.filter(organization=tenant.organization).values_list("kind", flat=True)
    ) == ["top_up"]


@pytest.fixture
def number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


def test_it_places_a_call_from_the_numbers_assistant(tenant: Tenant, number) -> None:
    response = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "call_sid", "call_id"}
    assert body["message"] == "Call initiated successfully"
    call = Call.objects.get(pk=body["call_id"])
    assert body["call_sid"] == call.call_sid and call.call_sid.startswith("SB")
    assert call.status == "initiated"
    assert call.organization == tenant.organization
    assert call.assistant == number.assistant
    assert call.conversation_flow is None
    assert (call.from_number, call.to_number, call.provider) == ("+15551234567", TO, "sandbox")
    assert call.welcome_message == number.assistant.welcome_message
    assert call.initiated_at is not None
    assert_money_consistent(tenant.organization)


def test_it_renders_the_documented_variables_example(tenant: Tenant, number) -> None:
    response = post(
        tenant,
        {
            "from_phone_number": "+15551234567",
            "to_phone_number": TO,
            "welcome_message": "Hello {{name}}, this is a reminder about your appointment "
            "tomorrow at {{time}}.",
            "agenda": "Remind {{name}} about their upcoming {{appointment_type}} appointment.",
            "variables": {"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
        },
    )

    assert response.status_code == 200
    call = Call.objects.get(pk=response.json()["call_id"])
    assert call.welcome_message == (
        "Hello John Doe, this is a reminder about your appointment tomorrow at 10 AM."
    )
    assert call.agenda == "Remind John Doe about their upcoming dental appointment."
    assert call.variables == {"name": "John Doe", "time": "10 AM", "appointment_type": "dental"}


def test_an_assistant_override_wins_over_the_numbers_assistant(tenant: Tenant, number) -> None:
    other = AssistantFactory(organization=tenant.organization)

    response = post(
        tenant,
        {
            "from_phone_number": "+15551234567",
            "to_phone_number": TO,
            "assistant_id": other.pk,
            "welcome_message": "Hi there! I'm calling about your recent inquiry.",
        },
    )

    assert response.status_code == 200
    call = Call.objects.get(pk=response.json()["call_id"])
    assert call.assistant == other
    assert call.welcome_message == "Hi there! I'm calling about your recent inquiry."


def test_a_number_on_a_live_flow_uses_the_flows_base_assistant(tenant: Tenant) -> None:
    flow = ConversationFlowFactory(organization=tenant.organization)
    PhoneNumberFactory(
        organization=tenant.organization,
        number="+15551230000",
        assistant=None,
        conversation_flow=flow,
    )

    response = post(tenant, {"from_phone_number": "+15551230000", "to_phone_number": TO})

    assert response.status_code == 200
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.assistant, call.conversation_flow) == (flow.base_assistant, flow)


def test_an_override_wins_over_a_flow(tenant: Tenant) -> None:
    flow = ConversationFlowFactory(organization=tenant.organization)
    PhoneNumberFactory(
        organization=tenant.organization,
        number="+15551230000",
        assistant=None,
        conversation_flow=flow,
    )
    other = AssistantFactory(organization=tenant.organization)

    response = post(
        tenant,
        {"from_phone_number": "+15551230000", "to_phone_number": TO, "assistant_id": other.pk},
    )

    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.assistant, call.conversation_flow) == (other, None)


def test_a_number_with_no_assistant_is_a_404(tenant: Tenant) -> None:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234569", assistant=None)

    response = post(tenant, {"from_phone_number": "+15551234569", "to_phone_number": TO})

    assert response.status_code == 404
    assert response.json() == {"detail": "No assistant found for phone number +15551234569"}
    assert_nothing_written(tenant)


def test_a_number_on_a_draft_flow_is_a_404(tenant: Tenant) -> None:
    flow = ConversationFlowFactory(organization=tenant.organization, is_live=False)
    PhoneNumberFactory(
        organization=tenant.organization,
        number="+15551234569",
        assistant=None,
        conversation_flow=flow,
    )

    response = post(tenant, {"from_phone_number": "+15551234569", "to_phone_number": TO})

    assert response.status_code == 404
    assert response.json() == {"detail": "No assistant found for phone number +15551234569"}


def test_an_inactive_assistant_is_not_resolved(tenant: Tenant) -> None:
    assistant = AssistantFactory(organization=tenant.organization, is_active=False)
    PhoneNumberFactory(organization=tenant.organization, number="+15551234569", assistant=assistant)

    response = post(tenant, {"from_phone_number": "+15551234569", "to_phone_number": TO})

    assert response.status_code == 404
    assert_nothing_written(tenant)


def test_a_number_of_another_organization_is_a_403(tenant: Tenant, outsider: Tenant) -> None:
    PhoneNumberFactory(organization=outsider.organization, number="+15557654321")

    response = post(tenant, {"from_phone_number": "+15557654321", "to_phone_number": TO})

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Unauthorized: phone number +15557654321 does not belong to your organization"
    }
    assert_nothing_written(tenant)
    assert Call.objects.count() == 0


def test_a_number_of_no_one_gets_the_same_403(tenant: Tenant) -> None:
    response = post(tenant, {"from_phone_number": "+15550000000", "to_phone_number": TO})

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Unauthorized: phone number +15550000000 does not belong to your organization"
    }


def test_an_assistant_of_another_organization_is_a_403(
    tenant: Tenant, outsider: Tenant, number
) -> None:
    foreign = AssistantFactory(organization=outsider.organization)

    response = post(
        tenant,
        {"from_phone_number": "+15551234567", "to_phone_number": TO, "assistant_id": foreign.pk},
    )

    assert response.status_code == 403
    assert response.json() == {
        "detail": f"Unauthorized: assistant {foreign.pk} does not belong to your organization"
    }
    assert_nothing_written(tenant)


def test_an_assistant_that_does_not_exist_gets_the_same_403(tenant: Tenant, number) -> None:
    response = post(
        tenant,
        {"from_phone_number": "+15551234567", "to_phone_number": TO, "assistant_id": 99999999},
    )

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Unauthorized: assistant 99999999 does not belong to your organization"
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"to_phone_number": TO}, "from_phone_number is required"),
        ({"from_phone_number": None, "to_phone_number": TO}, "from_phone_number is required"),
        ({"from_phone_number": "", "to_phone_number": TO}, "from_phone_number is required"),
        ({"from_phone_number": "+15551234567"}, "to_phone_number is required"),
        (
            {"from_phone_number": "5551234567", "to_phone_number": TO},
            "from_phone_number must be a phone number in E.164 format, e.g. +15551234567",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": "+1"},
            "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": "call me"},
            "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
        ),
        (
            {"from_phone_number": 15551234567, "to_phone_number": TO},
            "from_phone_number must be a string",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "assistant_id": "abc"},
            "assistant_id must be an integer",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "assistant_id": 0},
            "assistant_id must be a positive integer",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "assistant_id": 2**70},
            "assistant_id is too large",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "welcome_message": 5},
            "welcome_message must be a string",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "agenda": "x" * 4001},
            "agenda must be at most 4000 characters",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "variables": [1]},
            "variables must be an object",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "variables": {"a": {}}},
            "variables.a must be a string, number or boolean",
        ),
        (
            {"from_phone_number": "+15551234567", "to_phone_number": TO, "variables": {"a": None}},
            "variables.a must be a string, number or boolean",
        ),
        (
            {
                "from_phone_number": "+15551234567",
                "to_phone_number": TO,
                "welcome_message": "Hi {{name}}",
            },
            "Variable 'name' is used in welcome_message but was not supplied in variables.",
        ),
        (
            {
                "from_phone_number": "+15551234567",
                "to_phone_number": TO,
                "agenda": "Talk to {{ who }}",
                "variables": {"name": "x"},
            },
            "Variable 'who' is used in agenda but was not supplied in variables.",
        ),
        (
            {
                "from_phone_number": "+15551234567",
                "to_phone_number": TO,
                "welcome_message": "Hi {{first name}}",
            },
            "welcome_message has an invalid placeholder {{first name}}.",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(tenant: Tenant, number, body, detail) -> None:
    response = post(tenant, body)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert_nothing_written(tenant)


def test_a_body_that_is_not_an_object_is_a_400(tenant: Tenant) -> None:
    response = post(tenant, ["+15551234567"])

    assert response.status_code == 400
    assert response.json()["detail"] == "The request body must be a JSON object."


def test_malformed_json_is_a_400_in_the_same_shape(tenant: Tenant) -> None:
    response = tenant.client.post(URL, '{"from_phone_number": ', content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {"detail"}
    assert response.json()["detail"].startswith("JSON parse error")


def test_a_form_body_is_a_415(tenant: Tenant) -> None:
    response = tenant.client.post(URL, {"from_phone_number": "+15551234567"})

    assert response.status_code == 415
    assert set(response.json()) == {"detail"}
    assert response.json()["detail"].startswith('Unsupported media type "multipart/form-data;')
    assert Call.objects.count() == 0


def test_get_is_a_405(tenant: Tenant) -> None:
    response = tenant.client.get(URL)

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "GET" not allowed.'}


def test_a_400_comes_before_a_403(tenant: Tenant) -> None:
    response = post(tenant, {"from_phone_number": "+15550000000"})

    assert response.status_code == 400
    assert response.json()["detail"] == "to_phone_number is required"


def test_formatting_around_a_number_is_accepted_and_normalized(tenant: Tenant, number) -> None:
    response = post(
        tenant, {"from_phone_number": "+1 (555) 123-4567", "to_phone_number": "+1 555 987 6543"}
    )

    assert response.status_code == 200
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.from_number, call.to_number) == ("+15551234567", "+15559876543")


def test_a_variable_value_is_inserted_literally(tenant: Tenant, number) -> None:
    response = post(
        tenant,
        {
            "from_phone_number": "+15551234567",
            "to_phone_number": TO,
            "welcome_message": "Hi {{ name }}, {{n}} {{ok}}",
            "variables": {"name": "{{secret}}", "secret": "leak", "n": 3, "ok": True},
        },
    )

    call = Call.objects.get(pk=response.json()["call_id"])
    assert call.welcome_message == "Hi {{secret}}, 3 true"


def test_the_assistants_default_greeting_takes_variables_too(tenant: Tenant) -> None:
    assistant = AssistantFactory(organization=tenant.organization, welcome_message="Hi {{name}}!")
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567", assistant=assistant)

    response = post(
        tenant,
        {"from_phone_number": "+15551234567", "to_phone_number": TO, "variables": {"name": "Ann"}},
    )

    assert Call.objects.get(pk=response.json()["call_id"]).welcome_message == "Hi Ann!"


class TestMoney:
    def test_the_call_holds_what_its_time_limit_costs(self, tenant: Tenant, number) -> None:
        response = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

        call = Call.objects.get(pk=response.json()["call_id"])
        # 10 000 cents pays 100 000 minutes; the assistant caps the call at 600 s = 100 cents.
        assert (call.time_limit_seconds, call.hold_cents) == (600, 100)
        assert call.rate_cents_per_minute == 10
        balance = Balance.objects.get(organization=tenant.organization)
        assert (balance.balance_cents, balance.held_cents) == (10_000, 100)
        hold = LedgerEntry.objects.get(call_id=call.pk)
        assert (hold.kind, hold.amount_cents, hold.held_change_cents) == ("hold", 0, 100)

    def test_a_small_balance_limits_the_call(self, db) -> None:
        tenant = make_tenant(balance_cents=25)
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

        response = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

        call = Call.objects.get(pk=response.json()["call_id"])
        assert (call.time_limit_seconds, call.hold_cents) == (150, 25)

    def test_the_organizations_own_rate_applies(self, tenant: Tenant, number) -> None:
        tenant.organization.rate_cents_per_minute = 30
        tenant.organization.save()

        response = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

        call = Call.objects.get(pk=response.json()["call_id"])
        assert (call.rate_cents_per_minute, call.hold_cents) == (30, 300)

    @pytest.mark.parametrize("balance_cents", [0, 9])
    def test_less_than_a_billable_minute_is_a_402(self, db, balance_cents: int) -> None:
        tenant = make_tenant(balance_cents=balance_cents)
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

        response = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

        assert response.status_code == 402
        assert response.json() == {
            "detail": "Insufficient balance. Please add funds to continue making calls."
        }
        assert Call.objects.count() == 0
        assert Balance.objects.get(organization=tenant.organization).held_cents == 0

    def test_money_held_by_other_calls_is_not_available(self, db) -> None:
        tenant = make_tenant(balance_cents=15)
        PhoneNumberFactory(organization=tenant.organization, number="+15551234567")

        first = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})
        second = post(tenant, {"from_phone_number": "+15551234567", "to_phone_number": TO})

        assert (first.status_code, second.status_code) == (200, 402)
        assert_money_consistent(tenant.organization)


class TestProviderFailure:
    def test_a_refusal_is_a_502_with_a_failed_call_and_the_hold_released(
        self, tenant: Tenant, number
    ) -> None:
        response = post(
            tenant, {"from_phone_number": "+15551234567", "to_phone_number": "+15550000500"}
        )

        assert response.status_code == 502
        assert response.json() == {
            "detail": "Sandbox: the destination is unreachable (simulated refusal)."
        }
        call = Call.objects.get()
        assert (call.status, call.cost_cents, call.call_sid) == ("failed", 0, "")
        assert "unreachable" in call.error
        assert list(LedgerEntry.objects.filter(call_id=call.pk).values_list("kind", flat=True)) == [
            "release",
            "hold",
        ]
        assert Balance.objects.get(organization=tenant.organization).held_cents == 0
        assert_money_consistent(tenant.organization)

    def test_a_time_out_is_a_504(self, tenant: Tenant, number) -> None:
        response = post(
            tenant, {"from_phone_number": "+15551234567", "to_phone_number": "+15550000504"}
        )

        call = Call.objects.get()
        assert response.status_code == 504
        assert response.json() == {
            "detail": "The telephony provider did not answer in time; the call may have been "
            "placed. Follow it at GET /calls/{call_id}.",
            "call_id": str(call.pk),
        }
        assert (call.status, call.cost_cents) == ("unknown", None)  # held until it is known
        assert_money_consistent(tenant.organization)


@pytest.mark.parametrize(
    ("variables", "detail"),
    [
        (
            {"first name": "x"},
            "variables: a name must be letters, digits and underscores, at most 64",
        ),
        ({"\ud800": "x"}, "variables: a name must be letters, digits and underscores, at most 64"),
        ({"a": "\x00"}, "variables.a must not contain NUL or surrogate characters"),
        ({"a": "\udfff"}, "variables.a must not contain NUL or surrogate characters"),
        ({"a": "x" * 1001}, "variables.a must be at most 1000 characters"),
        ({f"v{i}": i for i in range(51)}, "variables may hold at most 50 entries"),
    ],
)
def test_variables_that_cannot_be_stored_or_said_are_a_400(
    tenant: Tenant, number, variables, detail
):
    body = {"from_phone_number": "+15551234567", "to_phone_number": TO, "variables": variables}
    # json.dumps escapes lone surrogates as \\udXXX, as a client's JSON library would.
    response = tenant.client.post(URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert_nothing_written(tenant)


UNSPEAKABLE = ["\x01", "\x0b", "\x1b", "\x7f", "\x85", "\ufffe"]


@pytest.mark.parametrize("char", UNSPEAKABLE, ids=repr)
@pytest.mark.parametrize(
    ("field", "extra", "detail"),
    [
        ("welcome_message", {}, "welcome_message must not contain control characters"),
        ("agenda", {}, "agenda must not contain control characters"),
        ("variables", {}, "variables.name must not contain control characters"),
    ],
)
def test_text_that_cannot_be_spoken_is_a_400_naming_the_field(
    tenant: Tenant, number, char: str, field: str, extra: dict, detail: str
) -> None:
    text = f"Hello{char}there"
    body = {"from_phone_number": "+15551234567", "to_phone_number": TO}
    body[field] = {"name": text} if field == "variables" else text

    response = post(tenant, body)

    assert response.status_code == 400
    assert response.json()["detail"] == f"{detail} (tabs and newlines are allowed)"
    assert_nothing_written(tenant)


def test_tabs_and_newlines_are_spoken_text(tenant: Tenant, number) -> None:
    response = post(
        tenant,
        {
            "from_phone_number": "+15551234567",
            "to_phone_number": TO,
            "welcome_message": "Hello {{name}},\r\n\tthis is a reminder.",
            "agenda": "1.\tRemind\n2.\tConfirm",
            "variables": {"name": "Ann\tLee"},
        },
    )

    assert response.status_code == 200
    call = Call.objects.get()
    assert call.welcome_message == "Hello Ann\tLee,\r\n\tthis is a reminder."
    assert call.agenda == "1.\tRemind\n2.\tConfirm"


def test_an_assistants_greeting_that_cannot_be_spoken_is_refused_by_its_validation(
    tenant: Tenant,
) -> None:
    # The admin runs the model's validation: an operator cannot save what no call could say.
    assistant = AssistantFactory.build(organization=tenant.organization, welcome_message="Hi\x07")

    with pytest.raises(ValidationError) as raised:
        assistant.full_clean()

    assert raised.value.message_dict == {
        "welcome_message": ["Must not contain control characters (tabs and newlines are allowed)."]
    }

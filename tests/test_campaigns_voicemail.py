"""A campaign's answering-machine detection: its `voicemail` applies to every attempt, an attempt
a machine answered ends `machine`, and a retry rule may name that outcome. The sandbox plays the
calls (its `...0009` numbers are answered by a machine), step by step as its worker would."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import LedgerEntry
from calls.models import Call, IdempotencyKey
from campaigns.models import RETRYABLE, Attempt, Campaign, Recipient
from campaigns.services import (
    attempt_idempotency_key,
    campaign_dial,
    outcome_of_call,
    recipients_collect,
)
from telephony.models import SipTrunk
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory
from tests.test_call_control import MACHINE, PERSON, play
from tests.test_campaigns import FROM, create, end_calls, fresh_paces, number, start

__all__ = ["fresh_paces", "number"]  # fixtures, used by name

HANGUP = {"detect": True, "on_machine": "hangup"}


def recipients(*numbers: str) -> list[dict[str, Any]]:
    return [{"to_phone_number": n, "variables": {"name": "Ann", "clinic": "Acme"}} for n in numbers]


def hung_up_on_by_detection(call: Call) -> None:
    """The sandbox's machine script: it rings, is answered, and the verdict comes 2 s later."""
    play(call, 0, 1)
    play(call, 2, at=6)
    assert (call.status, call.answered_by) == ("completed", "machine")


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_machine_ends_an_attempt_machine_and_the_rule_retries_it_once(
    tenant: Tenant, number
) -> None:
    campaign = start(
        tenant,
        number,
        recipients(MACHINE, PERSON),
        voicemail=HANGUP,
        retry={"max_attempts": 2, "on": ["machine"], "backoff_seconds": [0]},
    )
    assert campaign.voicemail == HANGUP

    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 2
    first = Call.objects.get(to_number=MACHINE)
    person = Call.objects.get(to_number=PERSON)
    # Each attempt asked for detection, under its attempt's unchanged idempotency key.
    assert first.voicemail == person.voicemail == {"on_machine": "hangup", "message": ""}
    machine_recipient = Recipient.objects.get(to_number=MACHINE)
    assert IdempotencyKey.objects.get(call=first).key == (
        f"campaign:{campaign.pk}:recipient:{machine_recipient.pk}:attempt:1"
    )
    assert (
        attempt_idempotency_key(machine_recipient, 1) == IdempotencyKey.objects.get(call=first).key
    )

    hung_up_on_by_detection(first)
    play(person, 0, 1, 2, 3)  # a person answers, talks, hangs up
    assert (person.status, person.answered_by) == ("completed", "human")
    assert recipients_collect(campaign=campaign) == 2

    machine_recipient.refresh_from_db()
    assert (machine_recipient.state, machine_recipient.outcome, machine_recipient.attempts) == (
        "retry_wait",
        "machine",
        1,
    )
    reached = Recipient.objects.get(to_number=PERSON)
    assert (reached.state, reached.outcome) == ("done", "completed")  # a person: not retried

    Recipient.objects.filter(pk=machine_recipient.pk).update(next_attempt_at=timezone.now())
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 1
    second = Call.objects.filter(to_number=MACHINE).exclude(pk=first.pk).get()
    assert second.voicemail == {"on_machine": "hangup", "message": ""}
    assert IdempotencyKey.objects.get(call=second).key == attempt_idempotency_key(
        machine_recipient, 2
    )
    hung_up_on_by_detection(second)
    recipients_collect(campaign=campaign)

    machine_recipient.refresh_from_db()
    assert (machine_recipient.state, machine_recipient.outcome, machine_recipient.attempts) == (
        "done",
        "machine",
        2,
    )
    assert list(
        Attempt.objects.filter(recipient=machine_recipient).values_list(
            "number", "outcome", "call_id"
        )
    ) == [(1, "machine", first.pk), (2, "machine", second.pk)]
    assert Call.objects.filter(to_number=MACHINE).count() == 2  # retried once, then no more

    detail = tenant.client.get(f"/campaigns/{campaign.pk}").json()
    assert detail["voicemail"] == HANGUP
    assert detail["progress"]["by_outcome"] == {"machine": 1, "completed": 1}
    listed = tenant.client.get(f"/campaigns/{campaign.pk}/recipients").json()["results"]
    assert [r["outcome"] for r in listed] == ["machine", "completed"]
    assert_money_consistent(tenant.organization)


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_without_machine_in_the_rule_a_machine_ends_the_recipient(tenant: Tenant, number) -> None:
    campaign = start(
        tenant,
        number,
        recipients(MACHINE),
        voicemail={
            "on_machine": "leave_message",
            "message": "Hi {{name}}, {{clinic}} called about your appointment.",
        },
        retry={"max_attempts": 3, "on": ["busy", "no-answer"]},
    )
    assert campaign.voicemail == {
        "detect": True,
        "on_machine": "leave_message",
        "message": "Hi {{name}}, {{clinic}} called about your appointment.",
    }
    campaign_dial(campaign_id=campaign.pk, slot=0)
    call = Call.objects.get()
    assert call.voicemail == {
        "on_machine": "leave_message",
        "message": "Hi Ann, Acme called about your appointment.",
    }
    play(call, 0, 1)
    play(call, 2, 3, 4, at=20)  # the verdict, the beep, the message, the end
    assert (call.status, call.answered_by) == ("completed", "machine")

    recipients_collect(campaign=campaign)

    recipient = Recipient.objects.get()
    assert (recipient.state, recipient.outcome, recipient.attempts) == ("done", "machine", 1)
    assert Call.objects.count() == 1


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_campaign_without_voicemail_dials_as_before_and_keeps_its_status_outcomes(
    tenant: Tenant, number
) -> None:
    campaign = start(tenant, number, recipients(MACHINE))
    assert campaign.voicemail is None
    assert tenant.client.get(f"/campaigns/{campaign.pk}").json()["voicemail"] is None

    campaign_dial(campaign_id=campaign.pk, slot=0)
    call = Call.objects.get()
    assert (call.voicemail, call.answered_by) == (None, None)
    end_calls()
    recipients_collect(campaign=campaign)
    assert Recipient.objects.get().outcome == "completed"


@pytest.mark.parametrize(
    ("answered_by", "voicemail", "outcome"),
    [
        ("machine", {"on_machine": "hangup", "message": ""}, "machine"),
        ("fax", {"on_machine": "hangup", "message": ""}, "machine"),
        ("machine", {"on_machine": "continue", "message": ""}, "machine"),
        ("human", {"on_machine": "hangup", "message": ""}, "completed"),
        ("unknown", {"on_machine": "hangup", "message": ""}, "completed"),
        (None, None, "completed"),
    ],
)
def test_the_outcome_is_machine_only_for_a_call_that_asked_and_got_a_machine_or_a_fax(
    answered_by: str | None, voicemail: dict[str, str] | None, outcome: str
) -> None:
    call = Call(status="completed", answered_by=answered_by, voicemail=voicemail)
    assert outcome_of_call(call) == outcome


def test_machine_is_an_outcome_a_retry_rule_may_name(tenant: Tenant, number) -> None:
    assert "machine" in RETRYABLE
    response = create(
        tenant, recipients=recipients(MACHINE), retry={"max_attempts": 2, "on": ["machine"]}
    )
    assert response.status_code == 201, response.json()
    assert response.json()["retry"]["on"] == ["machine"]

    response = create(tenant, name="Other", retry={"max_attempts": 2, "on": ["completed"]})
    assert response.status_code == 400
    assert '"completed" is not a valid choice.' in response.json()["detail"]
    assert Campaign.objects.count() == 1


@pytest.mark.parametrize(
    ("voicemail", "detail"),
    [
        ({"on_machine": "shout"}, "voicemail.on_machine must be one of: hangup, leave_message, "),
        ({"detect": True}, "voicemail.on_machine is required"),
        (
            {"on_machine": "leave_message"},
            "voicemail.message is required when on_machine is leave_message",
        ),
        (
            {"on_machine": "hangup", "message": "Hello"},
            "voicemail.message is only used when on_machine is leave_message",
        ),
        ("hangup", "voicemail must be an object"),
        (
            {"on_machine": "leave_message", "message": "Hi {{first_name}}"},
            "line 2: Variable 'first_name' is used in voicemail.message but was not supplied in "
            "variables.",
        ),
    ],
)
def test_a_bad_voicemail_is_a_400_and_creates_nothing(
    tenant: Tenant, number, voicemail: object, detail: str
) -> None:
    rows = [
        {"to_phone_number": "+12125550100", "variables": {"name": "Ann", "first_name": "Ann"}},
        {"to_phone_number": "+12125550101", "variables": {"name": "Bob"}},
    ]
    response = create(tenant, recipients=rows, voicemail=voicemail)

    assert response.status_code == 400, response.json()
    assert response.json()["detail"].startswith(detail)
    assert Campaign.objects.count() == 0
    assert Recipient.objects.count() == 0


def test_a_recipient_added_later_must_supply_the_voicemail_placeholders(
    tenant: Tenant, number
) -> None:
    response = create(
        tenant, voicemail={"on_machine": "leave_message", "message": "Hi {{name}} from {{clinic}}"}
    )
    assert response.status_code == 201, response.json()
    campaign_id = response.json()["campaign_id"]

    response = tenant.client.post(
        f"/campaigns/{campaign_id}/recipients",
        "to_phone_number,name\n+12125550100,Ann\n",
        content_type="text/csv",
    )

    assert response.status_code == 400
    assert response.json()["rows"] == [
        {
            "line": 2,
            "reason": "Variable 'clinic' is used in voicemail.message but was not supplied in "
            "variables.",
        }
    ]
    assert Recipient.objects.count() == 0


def test_a_campaign_from_a_number_that_cannot_detect_machines_is_refused(tenant: Tenant) -> None:
    PhoneNumberFactory(organization=tenant.organization, number=FROM)
    SipTrunk.objects.create(
        organization=tenant.organization, name="Carrier", gateway="sip.carrier.test"
    )
    PhoneNumberFactory(organization=tenant.organization, number="+15551230000", provider="sip")

    response = create(
        tenant,
        from_phone_numbers=[FROM, "+15551230000"],
        recipients=recipients(MACHINE),
        voicemail=HANGUP,
    )

    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": "BYO SIP trunk numbers cannot detect answering machines: leave voicemail "
            "out, or call from a Twilio, Telnyx, Vonage or sandbox number."
        },
    )
    assert Campaign.objects.count() == 0
    assert Recipient.objects.count() == 0
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["top_up"]

    # The same numbers without detection make a campaign.
    assert create(tenant, from_phone_numbers=[FROM, "+15551230000"]).status_code == 201

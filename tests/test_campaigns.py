"""Campaigns: the API, row validation, statuses, and the dialling rules (claims, the cap, the
do-not-call list, windows in each recipient's time, retries, a dead worker's claim), run here
in-process; tests/test_campaigns_worker.py runs them on real workers."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from burki.pacing import paces_reset
from calls.models import Call, DoNotCallNumber, IdempotencyKey
from calls.services import call_apply_event
from campaigns.models import Attempt, Campaign, Recipient
from campaigns.services import (
    _Dialer,
    attempt_idempotency_key,
    campaign_dial,
    campaigns_tick,
    place_call,
    recipient_claim,
    recipients_collect,
    recipients_recover,
)
from campaigns.windows import time_zones_for, window_next_open, window_open
from telephony.providers.base import StatusEvent
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import AssistantFactory, PhoneNumberFactory
from webhooks.models import WebhookEvent

FROM = "+15551234567"


@pytest.fixture(autouse=True)
def fresh_paces():
    paces_reset()


@pytest.fixture
def number(tenant: Tenant):
    assistant = AssistantFactory(organization=tenant.organization, welcome_message="Hi {{name}}")
    return PhoneNumberFactory(organization=tenant.organization, number=FROM, assistant=assistant)


def create(tenant: Tenant, **fields: object):
    body = {
        "name": "Reminders",
        "from_phone_number": FROM,
        "calls_per_second": "50",
        "max_concurrent_calls": 5,
        **fields,
    }
    return tenant.client.post("/campaigns", body, format="json")


def rows(*numbers: str) -> list[dict[str, object]]:
    return [{"to_phone_number": n, "variables": {"name": f"N{i}"}} for i, n in enumerate(numbers)]


# ---- the API ------------------------------------------------------------------------------


def test_a_campaign_is_created_with_its_recipients_and_their_time_zones(
    tenant: Tenant, number
) -> None:
    response = create(
        tenant,
        recipients=rows("+12125550100", "+442071234567"),
        calling_window={"start": "09:00", "end": "20:00", "days": ["mon", "tue"]},
        retry={"max_attempts": 3, "on": ["busy", "no-answer"], "backoff_seconds": [60, 600]},
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft"
    assert body["from_phone_numbers"] == [FROM]
    assert body["calling_window"] == {"start": "09:00", "end": "20:00", "days": ["mon", "tue"]}
    assert body["retry"] == {
        "max_attempts": 3,
        "on": ["busy", "no-answer"],
        "backoff_seconds": [60, 600],
    }
    assert body["progress"]["total"] == 2
    assert body["progress"]["by_state"]["queued"] == 2
    campaign = Campaign.objects.get(pk=body["campaign_id"])
    assert campaign.organization == tenant.organization
    zones = dict(campaign.recipients.values_list("to_number", "time_zones"))
    assert zones == {"+12125550100": "America/New_York", "+442071234567": "Europe/London"}


def test_bad_rows_are_named_by_line_and_nothing_is_created(tenant: Tenant, number) -> None:
    response = create(
        tenant,
        recipients=[
            {"to_phone_number": "+12125550100", "variables": {"name": "Ann"}},
            {"to_phone_number": "555", "variables": {"name": "Bob"}},
            {"to_phone_number": "+12125550101"},
            {"to_phone_number": "+12125550100", "variables": {"name": "Ann"}},
            "not an object",
        ],
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "line 2: to_phone_number must be a phone number in E.164 format, e.g. "
        "+15551234567 (and 3 more bad rows); no recipient was added.",
        "rows": [
            {
                "line": 2,
                "reason": "to_phone_number must be a phone number in E.164 format, e.g. "
                "+15551234567",
            },
            {
                "line": 3,
                "reason": "Variable 'name' is used in welcome_message but was not supplied in "
                "variables.",
            },
            {"line": 4, "reason": "+12125550100 is also on line 1"},
            {"line": 5, "reason": "a recipient must be an object"},
        ],
    }
    assert not Campaign.objects.exists()
    assert not Recipient.objects.exists()


def test_a_csv_upload_with_bad_lines_is_refused_whole(tenant: Tenant, number) -> None:
    campaign_id = create(tenant).json()["campaign_id"]
    text = (
        "to_phone_number,name,metadata.crm\n"
        "+12125550100,Ann,c1\n"
        "\n"
        "+1212,Bob,c2\n"
        "+12125550102,,c3\n"
        "+12125550103,Dee\n"
    )

    response = tenant.client.post(
        f"/campaigns/{campaign_id}/recipients", text, content_type="text/csv"
    )

    assert response.status_code == 400
    assert response.json()["rows"] == [
        {
            "line": 4,
            "reason": "to_phone_number must be a phone number in E.164 format, e.g. +15551234567",
        },
        {
            "line": 5,
            "reason": "Variable 'name' is used in welcome_message but was not supplied in "
            "variables.",
        },
        {"line": 6, "reason": "has 2 cells, the header 3"},
    ]
    assert not Recipient.objects.exists()


def test_a_good_csv_adds_every_row_with_its_variables_and_metadata(tenant: Tenant, number) -> None:
    campaign_id = create(tenant, recipients=rows("+12125550100")).json()["campaign_id"]
    text = "to_phone_number,name,metadata.crm\n+12125550101,Ann,c1\n+442071234567,Bob,\n"

    response = tenant.client.post(
        f"/campaigns/{campaign_id}/recipients", text, content_type="text/csv"
    )

    assert response.status_code == 201
    assert response.json() == {"added": 2}
    added = list(
        Recipient.objects.filter(campaign_id=campaign_id)
        .order_by("position")
        .values_list("position", "to_number", "variables", "metadata")
    )
    assert added == [
        (1, "+12125550100", {"name": "N0"}, {}),
        (3, "+12125550101", {"name": "Ann"}, {"crm": "c1"}),
        (4, "+442071234567", {"name": "Bob"}, {}),
    ]


def test_json_rows_may_be_added_later_and_a_number_already_there_is_a_bad_row(
    tenant: Tenant, number
) -> None:
    campaign_id = create(tenant, recipients=rows("+12125550100")).json()["campaign_id"]

    again = tenant.client.post(
        f"/campaigns/{campaign_id}/recipients",
        {"recipients": rows("+12125550101", "+12125550100")},
        format="json",
    )

    assert again.status_code == 400
    assert again.json()["rows"] == [
        {"line": 2, "reason": "+12125550100 is already a recipient of this campaign"}
    ]
    assert Recipient.objects.count() == 1


def test_a_number_of_another_organization_is_a_403(tenant: Tenant, outsider: Tenant) -> None:
    PhoneNumberFactory(organization=outsider.organization, number=FROM)

    response = create(tenant)

    assert response.status_code == 403
    assert response.json() == {
        "detail": f"Unauthorized: phone number {FROM} does not belong to your organization"
    }


def test_statuses_move_only_as_documented(tenant: Tenant, number) -> None:
    campaign_id = create(tenant, recipients=rows("+12125550100")).json()["campaign_id"]
    url = f"/campaigns/{campaign_id}"

    assert tenant.client.post(f"{url}/pause").status_code == 409
    started = tenant.client.post(f"{url}/start")
    assert started.status_code == 200 and started.json()["status"] == "running"
    assert tenant.client.post(f"{url}/start").json() == {
        "detail": "A running campaign cannot be started."
    }
    assert tenant.client.post(f"{url}/pause").json()["status"] == "paused"
    assert tenant.client.post(f"{url}/resume").json()["status"] == "running"
    canceled = tenant.client.post(f"{url}/cancel").json()
    assert canceled["status"] == "canceled"
    assert canceled["progress"]["by_state"]["canceled"] == 1
    assert tenant.client.post(f"{url}/resume").status_code == 409
    events = list(
        WebhookEvent.objects.filter(subject_id=campaign_id)
        .order_by("sequence")
        .values_list("type", "data__status")
    )
    assert events == [("campaign.started", "running"), ("campaign.completed", "canceled")]


def test_another_organizations_campaign_is_a_404(tenant: Tenant, outsider: Tenant, number) -> None:
    campaign_id = create(tenant, recipients=rows("+12125550100")).json()["campaign_id"]

    for answer in (
        outsider.client.get(f"/campaigns/{campaign_id}"),
        outsider.client.get(f"/campaigns/{campaign_id}/recipients"),
        outsider.client.post(f"/campaigns/{campaign_id}/start"),
        outsider.client.post(
            f"/campaigns/{campaign_id}/recipients", rows("+1212555"), format="json"
        ),
    ):
        assert answer.status_code == 404
    assert outsider.client.get("/campaigns").json()["results"] == []
    assert Campaign.objects.get().status == "draft"


def test_recipients_page_by_state_with_their_attempts(tenant: Tenant, number) -> None:
    campaign_id = create(tenant, recipients=rows("+12125550100", "+12125550101")).json()[
        "campaign_id"
    ]

    page = tenant.client.get(f"/campaigns/{campaign_id}/recipients", {"state": "queued"}).json()
    assert [r["to_phone_number"] for r in page["results"]] == ["+12125550100", "+12125550101"]
    assert page["results"][0]["attempt_list"] == []
    assert (
        tenant.client.get(f"/campaigns/{campaign_id}/recipients?state=done").json()["results"] == []
    )
    assert tenant.client.get(f"/campaigns/{campaign_id}/recipients?state=x").status_code == 400


def test_reading_a_campaign_costs_the_same_queries_whatever_its_size(
    tenant: Tenant, number, django_assert_num_queries
) -> None:
    small = create(tenant, recipients=rows("+12125550100")).json()["campaign_id"]
    large = create(tenant, recipients=rows(*[f"+1212555{n:04d}" for n in range(200)])).json()[
        "campaign_id"
    ]

    # The key; the campaign; the counts by state and outcome (one grouped query); the dials of
    # the last minute.
    with django_assert_num_queries(4):
        assert tenant.client.get(f"/campaigns/{small}").status_code == 200
    with django_assert_num_queries(4):
        assert tenant.client.get(f"/campaigns/{large}").status_code == 200
    # The key; the campaign; the page of recipients; their attempts with their calls.
    with django_assert_num_queries(4):
        page = tenant.client.get(f"/campaigns/{large}/recipients?page_size=100")
    assert len(page.json()["results"]) == 100


# ---- dialling -------------------------------------------------------------------------------


def start(tenant: Tenant, number, recipients, **fields: object) -> Campaign:
    response = create(tenant, recipients=recipients, **fields)
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert tenant.client.post(f"/campaigns/{campaign.pk}/start").status_code == 200
    campaign.refresh_from_db()
    return campaign


def end_calls(status: str = "completed") -> None:
    for call in Call.objects.exclude(status__in=["completed", "busy", "no-answer", "failed"]):
        call_apply_event(call=call, event=StatusEvent(status, duration_seconds=5), source="test")


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_dialer_places_each_recipient_once_through_call_initiate(tenant: Tenant, number) -> None:
    campaign = start(tenant, number, rows("+12125550100", "+12125550101", "+12125550102"))

    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 3
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 0  # nothing left to claim

    calls = Call.objects.filter(organization=tenant.organization)
    assert sorted(calls.values_list("to_number", flat=True)) == [
        "+12125550100",
        "+12125550101",
        "+12125550102",
    ]
    assert set(Recipient.objects.values_list("state", flat=True)) == {"calling"}
    # Every call went through call_initiate with its attempt's idempotency key.
    keys = set(IdempotencyKey.objects.values_list("key", "call_id"))
    assert keys == {
        (attempt_idempotency_key(r, 1), r.last_call_id) for r in Recipient.objects.all()
    }
    assert {c.variables["name"] for c in calls} == {"N0", "N1", "N2"}
    campaign.refresh_from_db()
    assert campaign.in_flight == 3

    end_calls()
    assert recipients_collect(campaign=campaign) == 3
    campaign.refresh_from_db()
    assert campaign.in_flight == 0
    assert campaigns_tick()["completed"] == 1
    campaign.refresh_from_db()
    assert campaign.status == "completed"
    assert set(Recipient.objects.values_list("state", "outcome")) == {("done", "completed")}
    assert WebhookEvent.objects.filter(subject_id=campaign.pk, type="campaign.completed").exists()
    assert_money_consistent(tenant.organization)


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_the_campaigns_cap_holds_recipients_back_until_calls_end(tenant: Tenant, number) -> None:
    campaign = start(
        tenant, number, rows(*[f"+1212555010{n}" for n in range(5)]), max_concurrent_calls=2
    )

    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 2
    campaign.refresh_from_db()
    assert campaign.in_flight == 2
    assert Recipient.objects.filter(state="queued").count() == 3

    end_calls()
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 2  # collected, then claimed
    assert Call.objects.count() == 4


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_at_the_organizations_cap_a_recipient_waits_instead_of_failing(
    tenant: Tenant, number
) -> None:
    tenant.organization.max_concurrent_calls = 1
    tenant.organization.save()
    campaign = start(tenant, number, rows("+12125550100", "+12125550101"))

    campaign_dial(campaign_id=campaign.pk, slot=0)

    assert Call.objects.count() == 1
    waiting = Recipient.objects.get(state="queued")
    assert (waiting.attempts, waiting.outcome) == (0, "")
    assert waiting.next_attempt_at > timezone.now()
    assert not Attempt.objects.filter(recipient=waiting).exists()
    assert not IdempotencyKey.objects.filter(key=attempt_idempotency_key(waiting, 1)).exists()
    campaign.refresh_from_db()
    assert campaign.in_flight == 1


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_number_on_the_do_not_call_list_is_never_dialled_by_a_campaign(
    tenant: Tenant, number
) -> None:
    campaign = start(tenant, number, rows("+12125550100", "+12125550101"))
    DoNotCallNumber.objects.create(
        organization=tenant.organization, number="+12125550101", added_by="test"
    )

    campaign_dial(campaign_id=campaign.pk, slot=0)

    assert list(Call.objects.values_list("to_number", flat=True)) == ["+12125550100"]
    listed = Recipient.objects.get(to_number="+12125550101")
    assert (listed.state, listed.outcome) == ("done", "do-not-call")
    campaign.refresh_from_db()
    assert campaign.in_flight == 1


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_busy_and_no_answer_retry_by_the_rule_then_stop(tenant: Tenant, number) -> None:
    campaign = start(
        tenant,
        number,
        rows("+12125550100", "+12125550101"),
        retry={"max_attempts": 2, "on": ["busy"], "backoff_seconds": [30]},
    )
    campaign_dial(campaign_id=campaign.pk, slot=0)
    busy, silent = (Call.objects.get(to_number=n) for n in ("+12125550100", "+12125550101"))
    call_apply_event(call=busy, event=StatusEvent("busy"), source="test")
    call_apply_event(call=silent, event=StatusEvent("no-answer"), source="test")

    recipients_collect(campaign=campaign)

    retrying = Recipient.objects.get(to_number="+12125550100")
    assert (retrying.state, retrying.outcome, retrying.attempts) == ("retry_wait", "busy", 1)
    assert retrying.next_attempt_at == pytest.approx(
        timezone.now() + timedelta(seconds=30), abs=timedelta(seconds=5)
    )
    done = Recipient.objects.get(to_number="+12125550101")
    assert (done.state, done.outcome) == ("done", "no-answer")  # not in the rule's `on`

    Recipient.objects.filter(pk=retrying.pk).update(next_attempt_at=timezone.now())
    campaign_dial(campaign_id=campaign.pk, slot=0)
    second = Call.objects.filter(to_number="+12125550100").exclude(pk=busy.pk).get()
    call_apply_event(call=second, event=StatusEvent("busy"), source="test")
    recipients_collect(campaign=campaign)

    retrying.refresh_from_db()
    assert (retrying.state, retrying.outcome, retrying.attempts) == ("done", "busy", 2)
    assert list(
        Attempt.objects.filter(recipient=retrying).values_list("number", "outcome", "call_id")
    ) == [(1, "busy", busy.pk), (2, "busy", second.pk)]


def test_a_worker_killed_after_recording_the_call_never_causes_a_second_dial(
    tenant: Tenant, number
) -> None:
    campaign = start(tenant, number, rows("+12125550100"))
    recipient = recipient_claim(campaign=campaign)
    assert recipient is not None
    place_call(dialer=_Dialer(campaign), recipient=recipient, phone_number=number)
    call = Call.objects.get()
    # As a worker killed after call_initiate recorded the call, before marking the recipient.
    Recipient.objects.filter(pk=recipient.pk).update(
        state="dialing", last_call=None, claimed_at=timezone.now() - timedelta(hours=1)
    )

    assert recipients_recover(campaign=campaign) == 1

    recipient.refresh_from_db()
    assert (recipient.state, recipient.last_call_id, recipient.attempts) == (
        "calling",
        call.pk,
        1,
    )
    assert Call.objects.count() == 1


def test_a_worker_killed_before_recording_a_call_gives_the_attempt_back(
    tenant: Tenant, number
) -> None:
    campaign = start(tenant, number, rows("+12125550100"))
    recipient = recipient_claim(campaign=campaign)
    assert recipient is not None
    Recipient.objects.filter(pk=recipient.pk).update(claimed_at=timezone.now() - timedelta(hours=1))

    recipients_recover(campaign=campaign)

    recipient.refresh_from_db()
    assert (recipient.state, recipient.attempts) == ("queued", 0)
    campaign.refresh_from_db()
    assert campaign.in_flight == 0
    again = recipient_claim(campaign=campaign)
    assert again is not None and again.attempts == 1
    assert Attempt.objects.filter(recipient=recipient).count() == 1


# ---- calling windows ------------------------------------------------------------------------

WINDOW = {"start": time(9), "end": time(20), "days": []}


def test_a_number_takes_its_own_zone_or_every_zone_of_its_country_code() -> None:
    assert time_zones_for("+12125550100") == ("America/New_York",)
    assert time_zones_for("+33612345678") == ("Europe/Paris",)
    unknown = time_zones_for("+15551234567")  # a fictional range: anywhere +1 reaches
    assert {"America/New_York", "Pacific/Honolulu", "America/St_Johns"} <= set(unknown)


def test_a_window_over_several_zones_is_the_one_they_all_agree_on() -> None:
    zones = ("America/New_York", "America/Los_Angeles")
    noon_utc = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # 07:00 in New York, 04:00 in LA

    assert not window_open(zones, noon_utc, **WINDOW)
    # 09:00 in New York is 14:00 UTC, but LA opens only at 17:00 UTC.
    assert not window_open(zones, datetime(2026, 12, 2, 15, 0, tzinfo=UTC), **WINDOW)
    assert window_next_open(zones, noon_utc, **WINDOW) == datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    # New York closes at 20:00, 01:00 UTC: the shared window ends with it.
    assert window_open(zones, datetime(2026, 12, 3, 0, 59, tzinfo=UTC), **WINDOW)
    assert not window_open(zones, datetime(2026, 12, 3, 1, 0, tzinfo=UTC), **WINDOW)


def test_days_are_the_recipients_own_days() -> None:
    zones = ("Asia/Tokyo",)
    # Friday 20:00 UTC is Saturday 05:00 in Tokyo: a weekday window opens on Monday there.
    friday = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    weekdays = {**WINDOW, "days": ["mon", "tue", "wed", "thu", "fri"]}

    assert window_next_open(zones, friday, **weekdays) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)


def test_zones_that_never_agree_have_no_window() -> None:
    zones = ("Pacific/Guam", "Pacific/Honolulu")  # 20 hours apart
    narrow = {"start": time(9), "end": time(12), "days": []}

    assert window_next_open(zones, datetime(2026, 12, 2, tzinfo=UTC), **narrow) is None


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_recipient_outside_its_window_waits_for_its_opening(tenant: Tenant, number) -> None:
    campaign = start(
        tenant,
        number,
        rows("+12125550100", "+442071234567"),
        calling_window={"start": "09:00", "end": "20:00"},
    )
    noon_utc = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # London 12:00, New York 07:00

    claimed = recipient_claim(campaign=campaign, now=noon_utc)
    nothing = recipient_claim(campaign=campaign, now=noon_utc)

    assert claimed is not None and claimed.to_number == "+442071234567"
    assert nothing is None
    waiting = Recipient.objects.get(to_number="+12125550100")
    assert waiting.state == "queued"
    assert waiting.next_attempt_at == datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # 09:00 there


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_recipient_whose_window_never_opens_ends_without_a_dial(tenant: Tenant, number) -> None:
    campaign = start(
        tenant, number, rows("+15551230000"), calling_window={"start": "09:00", "end": "12:00"}
    )

    campaign_dial(campaign_id=campaign.pk, slot=0)

    assert not Call.objects.exists()
    assert Recipient.objects.get().outcome == "no-window"


def test_the_pace_is_the_slower_of_the_campaign_and_its_provider_account(
    tenant: Tenant,
) -> None:
    number = PhoneNumberFactory(organization=tenant.organization, number=FROM, twilio=True)
    number.provider_account.calls_per_second = Decimal(2)
    number.provider_account.save()
    campaign = start(tenant, number, rows(*[f"+1212555010{n}" for n in range(4)]))
    dialer = _Dialer(campaign)
    from burki.pacing import pace_reserve
    from calls.services import provider_account_pace
    from campaigns.services import campaign_pace

    paces = [campaign_pace(campaign), provider_account_pace(number.provider_account)]
    waits = [pace_reserve([p for p in paces if p], max_wait=5).wait_seconds for _ in range(3)]

    assert waits == pytest.approx([0, 0.5, 1.0], abs=0.03)  # 2 a second, not the campaign's 50
    assert dialer.phone_number(Recipient.objects.first()) == number


def test_a_file_that_is_not_csv_is_a_bad_line_not_an_error(tenant: Tenant, number) -> None:
    campaign_id = create(tenant).json()["campaign_id"]

    response = tenant.client.post(
        f"/campaigns/{campaign_id}/recipients",
        "to_phone_number,name\n+12125550100,Ann\n+12125550101," + "x" * 200_000 + "\n",
        content_type="text/csv",
    )

    assert response.status_code == 400
    assert response.json()["rows"] == [
        {"line": 3, "reason": "not CSV: field larger than field limit (131072)"}
    ]
    assert not Recipient.objects.exists()


@override_settings(CAMPAIGN_DIALER_SECONDS=5)
def test_a_dialer_with_nothing_due_gives_its_worker_back(tenant: Tenant, number) -> None:
    campaign = start(tenant, number, rows("+12125550100"))
    import time as clock

    began = clock.monotonic()
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 1
    assert clock.monotonic() - began < 2  # not its whole 5 s


def test_the_campaign_events_carry_the_campaign_as_it_then_was(tenant: Tenant, number) -> None:
    import json

    from webhooks.services import event_render

    campaign = start(tenant, number, rows("+12125550100"), metadata={"crm": "batch-7"})

    event = WebhookEvent.objects.get(subject_id=campaign.pk, type="campaign.started")
    body = json.loads(event_render(event))

    assert body["type"] == "campaign.started"
    assert body["data"] == {
        "campaign_id": str(campaign.pk),
        "name": "Reminders",
        "status": "running",
        "calls_per_second": body["data"]["calls_per_second"],
        "max_concurrent_calls": 5,
        "metadata": {"crm": "batch-7"},
        "created_at": body["data"]["created_at"],
        "started_at": body["data"]["started_at"],
        "ended_at": None,
        "sequence": 1,
    }
    assert float(body["data"]["calls_per_second"]) == 50
    assert event.organization_id == tenant.organization.pk


@override_settings(CAMPAIGN_DIALER_SECONDS=0.5)
def test_a_paused_campaign_begins_no_attempt_and_a_canceled_one_retries_nothing(
    tenant: Tenant, number
) -> None:
    campaign = start(
        tenant,
        number,
        rows("+12125550100", "+12125550101"),
        retry={"max_attempts": 3, "on": ["busy"]},
        max_concurrent_calls=1,
    )
    campaign_dial(campaign_id=campaign.pk, slot=0)
    assert Call.objects.count() == 1
    tenant.client.post(f"/campaigns/{campaign.pk}/pause")

    end_calls("busy")
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 0
    recipients_collect(campaign=Campaign.objects.get(pk=campaign.pk))
    assert Call.objects.count() == 1
    assert Recipient.objects.get(to_number="+12125550100").state == "retry_wait"

    tenant.client.post(f"/campaigns/{campaign.pk}/cancel")
    assert set(Recipient.objects.values_list("state", flat=True)) == {"canceled"}
    assert campaign_dial(campaign_id=campaign.pk, slot=0) == 0
    assert Call.objects.count() == 1


def test_a_scheduled_campaign_starts_at_its_time(tenant: Tenant, number) -> None:
    at = timezone.now() + timedelta(minutes=5)
    response = create(tenant, recipients=rows("+12125550100"), start_at=at.isoformat())
    campaign_id = response.json()["campaign_id"]

    assert tenant.client.post(f"/campaigns/{campaign_id}/start").json()["status"] == "scheduled"
    assert campaigns_tick()["started"] == 0
    assert campaigns_tick(now=at + timedelta(seconds=1))["started"] == 1
    assert Campaign.objects.get(pk=campaign_id).status == "running"
    assert WebhookEvent.objects.filter(subject_id=campaign_id, type="campaign.started").exists()


def test_an_attempt_already_answered_under_its_key_is_adopted_not_redialled(
    tenant: Tenant, number
) -> None:
    campaign = start(tenant, number, rows("+12125550100"))
    recipient = recipient_claim(campaign=campaign)
    assert recipient is not None
    place_call(dialer=_Dialer(campaign), recipient=recipient, phone_number=number)
    call = Call.objects.get()
    # A second worker holding the same claim (its first owner was thought dead) places it again.
    Recipient.objects.filter(pk=recipient.pk).update(state="dialing", last_call=None)

    place_call(dialer=_Dialer(campaign), recipient=recipient, phone_number=number)

    assert Call.objects.count() == 1
    recipient.refresh_from_db()
    assert (recipient.state, recipient.last_call_id) == ("calling", call.pk)


def test_a_claim_skips_locked_rows_and_a_dial_costs_a_fixed_number_of_statements(
    tenant: Tenant, number
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    campaign = start(tenant, number, rows("+12125550100", "+12125550101"))
    campaign = Campaign.objects.select_related("organization", "assistant").get(pk=campaign.pk)

    with CaptureQueriesContext(connection) as claim:
        recipient = recipient_claim(campaign=campaign)
    with CaptureQueriesContext(connection) as dial:
        assert recipient is not None
        place_call(dialer=_Dialer(campaign), recipient=recipient, phone_number=number)

    # The claim: SAVEPOINT/BEGIN, SELECT the due recipients FOR UPDATE SKIP LOCKED, UPDATE the
    # recipient (claimed on its state), UPDATE the campaign's in_flight (under the cap), INSERT
    # the attempt, RELEASE/COMMIT.
    assert len(claim.captured_queries) == 6
    assert "FOR UPDATE SKIP LOCKED" in claim.captured_queries[1]["sql"]
    # The dial: the attempt's idempotency key (3, in its own savepoint), then call_initiate as
    # for the API less the API key's and the number's lookups (11: the do-not-call list; the
    # call, the key's link, the hold and an event in one transaction; the provider's id and an
    # event in another), the key's answer (1), and the recipient's and the attempt's move to
    # the call (4, in a transaction).
    assert len(dial.captured_queries) == 19
    assert Call.objects.count() == 1

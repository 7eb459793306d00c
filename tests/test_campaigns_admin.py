"""The campaigns admin: create from a CSV (bad lines named, nothing created), the buttons, the
progress and chart, recipients by number, and the do-not-call CSV import."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from burki.models import Membership
from calls.models import DoNotCallNumber
from campaigns.models import Campaign, Recipient
from tests.conftest import Tenant
from tests.factories import PhoneNumberFactory

FROM = "+15551234567"


@pytest.fixture
def member(tenant: Tenant) -> Client:
    user = User.objects.create_user("ann", password="a-long-test-password-1", is_staff=True)
    Membership.objects.create(user=user, organization=tenant.organization, role="member")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def number(tenant: Tenant):
    number = PhoneNumberFactory(organization=tenant.organization, number=FROM)
    number.assistant.welcome_message = "Hello {{name}}"
    number.assistant.save()
    return number


def upload(member: Client, tenant: Tenant, csv: str, **extra: object):
    return member.post(
        reverse("admin:campaigns_campaign_add"),
        {
            "organization": tenant.organization.pk,
            "name": "Reminders",
            "from_phone_numbers": FROM,
            "calls_per_second": "2",
            "max_concurrent_calls": "5",
            "retry_max_attempts": "2",
            "retry_on": ["busy"],
            "retry_backoff_seconds": "60",
            "window_start": "09:00",
            "window_end": "20:00",
            "recipients": SimpleUploadedFile("list.csv", csv.encode(), content_type="text/csv"),
            **extra,
        },
    )


def test_a_csv_with_bad_lines_creates_nothing_and_names_each_line(
    tenant: Tenant, member: Client, number
) -> None:
    response = upload(member, tenant, "to_phone_number,name\n+12125550100,Ann\nnope,Bob\n+1212555")

    assert response.status_code == 200
    page = response.content.decode()
    assert "line 3: to_phone_number must be a phone number in E.164 format" in page
    assert "line 4: has 1 cells, the header 2" in page
    assert "2 bad rows: nothing was created." in page
    assert not Campaign.objects.exists()


def test_a_good_csv_creates_the_campaign_and_its_buttons_run_it(
    tenant: Tenant, member: Client, number
) -> None:
    response = upload(member, tenant, "to_phone_number,name\n+12125550100,Ann\n+12125550101,Bob\n")

    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert (campaign.organization, campaign.window_start.hour, campaign.retry_on) == (
        tenant.organization,
        9,
        ["busy"],
    )
    assert Recipient.objects.filter(campaign=campaign).count() == 2
    page = member.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    html = page.content.decode()
    assert "<progress" in html and "<svg" in html and 'value="Start"' in html
    assert 'value="Pause"' not in html  # a draft is started, not paused
    assert "0% of 2" in html

    started = member.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "start"]))
    assert started.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "running"
    member.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "pause"]))
    campaign.refresh_from_db()
    assert campaign.status == "paused"


def test_a_csv_campaign_may_leave_a_message_on_machines_and_shows_their_outcome(
    tenant: Tenant, member: Client, number
) -> None:
    response = upload(
        member,
        tenant,
        "to_phone_number,name\n+15559870009,Ann\n",
        voicemail_on_machine="leave_message",
        voicemail_message="Hi {{name}}, please call us back.",
        retry_on=["busy", "machine"],
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.voicemail == {
        "detect": True,
        "on_machine": "leave_message",
        "message": "Hi {{name}}, please call us back.",
    }
    assert campaign.retry_on == ["busy", "machine"]
    Recipient.objects.filter(campaign=campaign).update(state="done", outcome="machine")
    html = member.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content
    page = html.decode()
    assert "detected: leave_message: Hi {{name}}, please call us back." in page
    assert "machine: 1" in page


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"voicemail_on_machine": "leave_message"},
            "voicemail.message is required when on_machine is leave_message",
        ),
        (
            {"voicemail_on_machine": "hangup", "voicemail_message": "Hello"},
            "voicemail.message is only used when on_machine is leave_message",
        ),
        ({"voicemail_message": "Hello"}, "Choose what happens when a machine answers."),
        (
            {"voicemail_on_machine": "leave_message", "voicemail_message": "Hi {{first}}"},
            "line 2: Variable &#x27;first&#x27; is used in voicemail.message but was not "
            "supplied in variables.",
        ),
    ],
)
def test_a_bad_voicemail_in_the_csv_form_creates_nothing(
    tenant: Tenant, member: Client, number, fields: dict[str, str], error: str
) -> None:
    response = upload(member, tenant, "to_phone_number,name\n+15559870009,Ann\n", **fields)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Campaign.objects.exists()
    assert not Recipient.objects.exists()


def test_recipients_are_searchable_by_number(tenant: Tenant, member: Client, number) -> None:
    upload(member, tenant, "to_phone_number,name\n+12125550100,Ann\n+12125550101,Bob\n")

    response = member.get(reverse("admin:campaigns_recipient_changelist"), {"q": "5550101"})

    assert [r.to_number for r in response.context["cl"].result_list] == ["+12125550101"]


def test_the_do_not_call_import_names_bad_lines_and_adds_the_good_file(
    tenant: Tenant, member: Client
) -> None:
    url = reverse("admin:calls_donotcallnumber_import")

    def send(text: str):
        return member.post(
            url,
            {
                "organization": tenant.organization.pk,
                "file": SimpleUploadedFile("dnc.csv", text.encode(), content_type="text/csv"),
            },
        )

    bad = send("number\n+15559876543\nx\n")
    assert "line 3: x must start with + and a country code" in bad.content.decode()
    assert not DoNotCallNumber.objects.exists()

    good = send("number,reason\n+15559876543,asked\n")
    assert good.status_code == 302
    entry = DoNotCallNumber.objects.get()
    assert (entry.number, entry.reason, entry.added_by) == (
        "+15559876543",
        "asked",
        "CSV import by ann",
    )

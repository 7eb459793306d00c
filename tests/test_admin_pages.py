"""The admin as an operator reads it: what it lets you change, and what its pages say."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from billing.models import Balance
from billing.services import balance_hold_call
from burki.models import Membership, Organization
from calls.dashboard import calls_dashboard
from calls.models import Call
from calls.serializers import E164Field, e164_messages
from telephony.e164 import E164FormField
from telephony.models import PhoneNumber, ProviderAccount
from tests.conftest import Tenant, make_tenant
from tests.factories import AssistantFactory


@pytest.fixture
def operator(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw-x-123"))
    return client


def hold_one_call(tenant: Tenant) -> uuid.UUID:
    call_id = uuid.uuid4()
    balance_hold_call(
        organization_id=tenant.organization.pk,
        call_id=call_id,
        rate_cents_per_minute=10,
        max_seconds=600,
        max_open_holds=10,
        check_room=lambda: None,
    )
    return call_id


def make_call(organization: Organization, **fields) -> Call:
    values = {
        "organization": organization,
        "from_number": "+15551234567",
        "to_number": "+15559876543",
        "provider": "sandbox",
        "time_limit_seconds": 600,
        "rate_cents_per_minute": 10,
        "hold_cents": 100,
        **fields,
    }
    return Call.objects.create(**values)


class TestBalancePage:
    def test_saving_the_page_never_changes_the_derived_counters(self, operator, tenant) -> None:
        balance = Balance.objects.get(organization=tenant.organization)
        url = reverse("admin:billing_balance_change", args=[balance.pk])
        page = operator.get(url)  # opened before the call starts, as in the report
        hold_one_call(tenant)

        fields = page.context["adminform"].form.fields
        saved = operator.post(url, {"organization": tenant.organization.pk, "open_holds": 0})

        assert list(fields) == []  # nothing on it is a form field
        assert 'name="_save"' not in page.content.decode()
        assert page.context["title"] == "View balance"
        assert saved.status_code == 403
        balance.refresh_from_db()
        assert (balance.open_holds, balance.held_cents) == (1, 100)

    def test_money_shows_as_currency_and_held_money_as_reserved(self, operator, tenant) -> None:
        hold_one_call(tenant)
        balance = Balance.objects.get(organization=tenant.organization)

        listing = operator.get(reverse("admin:billing_balance_changelist")).content.decode()
        page = operator.get(reverse("admin:billing_balance_change", args=[balance.pk]))
        ledger = operator.get(reverse("admin:billing_ledgerentry_changelist")).content.decode()

        for text in (listing, page.content.decode()):
            assert "$100.00" in text and "$1.00" in text and "$99.00" in text
            assert "Reserved" in text
            main = re.sub(r"<[^>]+>", " ", text.split("<main")[1])
            assert not re.search(r"\bheld\b", main, re.IGNORECASE)
        assert "+$100.00" in ledger and "$100.00 ($1.00)" in ledger
        assert "Balance after (reserved)" in ledger
        assert "10000" not in ledger

    def test_a_new_organization_comes_with_its_balance(self, operator) -> None:
        response = operator.post(reverse("admin:burki_organization_add"), {"name": "Newco"})

        assert response.status_code == 302, response.context["adminform"].form.errors
        balance = Balance.objects.get(organization__name="Newco")
        assert (balance.balance_cents, balance.held_cents, balance.open_holds) == (0, 0, 0)
        assert operator.get(reverse("admin:billing_balance_add")).status_code == 403

    def test_the_operator_tops_up_in_currency(self, operator, tenant) -> None:
        balance = Balance.objects.get(organization=tenant.organization)
        url = reverse("admin:billing_balance_top_up", args=[balance.pk])

        too_fine = operator.post(url, {"amount": "1.005", "memo": ""})
        done = operator.post(url, {"amount": "25.50", "memo": "invoice 7"}, follow=True)

        assert "at most 2 decimals" in too_fine.content.decode()
        balance.refresh_from_db()
        assert balance.balance_cents == 10_000 + 2_550
        assert f"{tenant.organization}: +$25.50 recorded." in done.content.decode()


class TestPhoneNumbers:
    @pytest.mark.parametrize(
        "text",
        [
            "+15551234567",
            "+1 (555) 123-4567",
            "+14155550123",
            "+442071838750",
            "+1555",
            "555",
            "+15551234567 ext. 12",
            "+81" + "1" * 14,
            "+270000000",
            "+1 555 abc",
        ],
    )
    def test_the_admin_accepts_exactly_what_the_api_accepts(self, text: str) -> None:
        api = E164Field(error_messages=e164_messages("number"))
        try:
            api_value: str | None = api.run_validation(text)
        except ValidationError:
            api_value = None
        form_field = E164FormField()
        try:
            admin_value: str | None = form_field.clean(text)
        except Exception:
            admin_value = None

        assert admin_value == api_value

    def test_the_demo_number_saves_and_its_label_can_be_edited(self, operator, tenant) -> None:
        assistant = AssistantFactory(organization=tenant.organization)
        add = operator.post(
            reverse("admin:telephony_phonenumber_add"),
            {
                "organization": tenant.organization.pk,
                "number": "+1 (555) 123-4567",
                "provider": "sandbox",
                "assistant": assistant.pk,
            },
        )
        number = PhoneNumber.objects.get()
        edit = operator.post(
            reverse("admin:telephony_phonenumber_change", args=[number.pk]),
            {
                "organization": tenant.organization.pk,
                "number": "+15551234567",
                "label": "Main line",
                "provider": "sandbox",
                "assistant": assistant.pk,
            },
        )

        assert (add.status_code, edit.status_code) == (302, 302)
        number.refresh_from_db()
        assert (str(number.number), number.label) == ("+15551234567", "Main line")

    def test_a_number_the_api_refuses_is_refused_with_the_reason(self, operator, tenant) -> None:
        response = operator.post(
            reverse("admin:telephony_phonenumber_add"),
            {"organization": tenant.organization.pk, "number": "5551234", "provider": "sandbox"},
        )

        assert response.context["adminform"].form.errors["number"] == [
            "Enter a phone number in E.164 format, e.g. +15551234567: this one must start with "
            "+ and a country code."
        ]


class TestCallPage:
    def test_a_call_is_viewed_with_no_save_button(self, operator, tenant) -> None:
        call = make_call(tenant.organization, cost_cents=42, status="completed")

        page = operator.get(reverse("admin:calls_call_change", args=[call.pk]))
        listing = operator.get(reverse("admin:calls_call_changelist")).content.decode()
        index = operator.get(reverse("admin:index")).content.decode()

        text = page.content.decode()
        assert page.context["title"] == "View call"
        assert 'name="_save"' not in text and 'value="Save' not in text
        assert "$0.42" in text and "$1.00" in text  # cost and hold
        assert "$0.42" in listing
        calls_row = index.split('class="model-call')[1].split("</tr>")[0]
        assert "View" in calls_row and "Change" not in calls_row


class TestProviderAccounts:
    def test_the_provider_choice_lists_only_providers_that_use_an_account(self, operator) -> None:
        form = operator.get(reverse("admin:telephony_provideraccount_add")).context["adminform"]

        assert [value for value, _ in form.form.fields["provider"].choices] == [
            "",
            "twilio",
            "telnyx",
            "vonage",
        ]

    def test_an_account_sid_of_the_wrong_shape_is_refused(self, operator, tenant) -> None:
        response = operator.post(
            reverse("admin:telephony_provideraccount_add"),
            {
                "organization": tenant.organization.pk,
                "provider": "twilio",
                "name": "Bad SID",
                "twilio__account_sid": "XY123",
                "twilio__auth_token": "token",
            },
        )

        assert response.context["adminform"].form.errors["twilio__account_sid"] == [
            "An Account SID is AC and 32 hexadecimal digits (0-9, a-f)."
        ]
        assert not ProviderAccount.objects.exists()


def test_non_obvious_fields_carry_help(operator, tenant) -> None:
    organization = (
        operator.get(reverse("admin:burki_organization_change", args=[tenant.organization.pk]))
        .context["adminform"]
        .form
    )
    assistant = operator.get(reverse("admin:assistants_assistant_add")).context["adminform"].form
    number = operator.get(reverse("admin:telephony_phonenumber_add")).context["adminform"].form

    for form, names in [
        (organization, ["rate_cents_per_minute", "max_concurrent_calls"]),
        (assistant, ["settings", "welcome_message", "max_call_duration_seconds", "is_active"]),
        (number, ["number", "provider", "provider_account", "assistant", "conversation_flow"]),
    ]:
        for name in names:
            assert form.fields[name].help_text, name


def test_view_site_leads_to_the_api_docs(operator) -> None:
    index = operator.get(reverse("admin:index")).content.decode()

    assert '<a href="/api/docs/">API docs</a>' in index
    assert operator.get("/api/docs/").status_code == 200


class TestErrorPages:
    @pytest.mark.parametrize("debug", [True, False])
    def test_an_unknown_path_answers_json_in_debug_too(self, db, debug: bool) -> None:
        with override_settings(DEBUG=debug):
            client = Client(enforce_csrf_checks=True)
            responses = [client.get(path) for path in ("/nope", "/calls/x/y/z", "/adminx")]
            responses.append(client.post("/calls/null,null/hangup"))

        for response in responses:
            assert (response.status_code, response.json()) == (404, {"detail": "Not found."})

    def test_an_api_crash_in_debug_is_json_and_logged(self, tenant, monkeypatch, caplog) -> None:
        def crash(**_: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr("billing.apis.balance_for_organization", crash)
        client = Client(raise_request_exception=False)

        with override_settings(DEBUG=True):
            response = client.get("/billing/balance", HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")

        assert (response.status_code, response.json()) == (
            500,
            {"detail": "Internal server error."},
        )
        assert "RuntimeError: boom" in caplog.text

    def test_the_admin_path_without_its_slash_leads_to_it(self, db) -> None:
        response = Client().get("/admin")

        assert (response.status_code, response["Location"]) == (302, "/admin/")

    @pytest.mark.parametrize("debug", [True, False])
    def test_the_admin_answers_its_own_404_page(self, operator, debug: bool) -> None:
        with override_settings(DEBUG=debug):
            missing = operator.get(reverse("admin:calls_call_change", args=[uuid.uuid4()]))
            unknown = operator.get("/admin/no/such/page/")

        for response in (missing, unknown):
            assert response.status_code == 404
            text = response.content.decode()
            assert "<title>Not found | Burki admin</title>" in text
            assert "URLconf" not in text  # not Django's debug page


def test_the_dashboard_counts_a_members_calls_only(db) -> None:
    acme, globex = make_tenant(), make_tenant()
    now = timezone.now()
    make_call(
        acme.organization,
        status="completed",
        answered_at=now,
        duration_seconds=90,
        cost_cents=15,
    )
    make_call(acme.organization, status="no-answer", cost_cents=0)
    old = make_call(acme.organization, status="completed", answered_at=now, cost_cents=99)
    Call.objects.filter(pk=old.pk).update(created_at=now - dt.timedelta(days=40))
    make_call(
        globex.organization, status="completed", answered_at=now, cost_cents=500, hold_cents=500
    )
    user = User.objects.create_user("acme", password="pw-x-123", is_staff=True)
    Membership.objects.create(user=user, organization=acme.organization, role="member")
    client = Client()
    client.force_login(user)
    url = reverse("admin:calls_call_dashboard")

    page = client.get(url)
    other = client.get(url, {"organization": globex.organization.pk})

    board = page.context["dashboard"]
    assert (board.calls, board.answered, board.minutes, board.spend, board.answer_rate) == (
        2,
        1,
        2,
        "$0.15",
        "50%",
    )
    assert [(o.status, o.count) for o in board.outcomes] == [("completed", 1), ("no-answer", 1)]
    assert [bar.height > 0 for bar in board.charts[0].bars].count(True) == 1
    text = page.content.decode()
    assert text.count("<rect ") == 3 * 30
    assert "<script src" not in text.split("<main")[1]
    assert other.status_code == 404
    assert calls_dashboard(Call.objects.all()).spend == "$5.15"

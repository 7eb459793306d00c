"""The admin for a member of one organization: its organization's rows, nothing of anyone else's."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistants.models import Assistant
from billing.models import Balance, LedgerEntry
from burki.admin_tenancy import OperatorOnlyAdmin, OrganizationScopedAdmin
from burki.models import ApiKey, Membership, Organization
from calls.models import Call, CallEvent, DoNotCallNumber
from campaigns.models import Campaign, Recipient
from telephony.models import PhoneNumber, ProviderAccount, SipTrunk
from tests.conftest import Tenant, make_tenant
from tests.factories import (
    ConversationFlowFactory,
    PhoneNumberFactory,
    SipTrunkFactory,
)
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import webhook_endpoint_create

PASSWORD = "a-long-test-password-1"


@dataclass
class World:
    acme: Tenant
    globex: Tenant
    owner: Client
    member: Client
    globex_rows: dict[type, object]


def populate(tenant: Tenant, name: str) -> dict[type, object]:
    organization = tenant.organization
    organization.name = name
    organization.save()
    number = PhoneNumberFactory(organization=organization, telnyx=True, label=f"{name} main")
    flow = ConversationFlowFactory(organization=organization, name=f"{name} flow")
    trunk = SipTrunkFactory(organization=organization, name=f"{name} trunk")
    call = Call.objects.create(
        organization=organization,
        phone_number=number,
        from_number=str(number.number),
        to_number="+15559876543",
        provider="telnyx",
        time_limit_seconds=60,
        rate_cents_per_minute=10,
        hold_cents=10,
        welcome_message=f"Welcome to {name}",
        variables={"secret_plan": f"{name} plan"},
    )
    event = CallEvent.objects.create(call=call, status="initiated", source="telnyx")
    endpoint, _ = webhook_endpoint_create(
        organization_id=organization.pk, url=f"https://hooks.example.com/{name}", events=[]
    )
    outbox = WebhookEvent.objects.create(
        organization=organization, type="call.ended", subject_id=call.pk, sequence=1, data={}
    )
    campaign = Campaign.objects.create(
        organization=organization, name=f"{name} campaign", from_numbers=[str(number.number)]
    )
    recipient = Recipient.objects.create(
        campaign=campaign,
        position=1,
        to_number="+15559876543",
        time_zones="UTC",
        next_attempt_at=timezone.now(),
    )
    do_not_call = DoNotCallNumber.objects.create(
        organization=organization, number="+15559876500", added_by=f"{name} owner"
    )
    delivery = WebhookDelivery.objects.create(
        event=outbox,
        endpoint=endpoint,
        subject_id=call.pk,
        sequence=1,
        next_attempt_at=outbox.created_at,
    )
    return {
        Campaign: campaign,
        Recipient: recipient,
        DoNotCallNumber: do_not_call,
        WebhookEndpoint: endpoint,
        WebhookDelivery: delivery,
        Organization: organization,
        ApiKey: ApiKey.objects.get(organization=organization),
        PhoneNumber: number,
        ProviderAccount: number.provider_account,
        Assistant: number.assistant,
        type(flow): flow,
        SipTrunk: trunk,
        Call: call,
        CallEvent: event,
        Balance: Balance.objects.get(organization=organization),
        LedgerEntry: LedgerEntry.objects.filter(organization=organization).first(),
    }


def login(organization: Organization, role: str, username: str) -> Client:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, organization=organization, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(db) -> World:
    acme, globex = make_tenant(), make_tenant()
    populate(acme, "Acme")
    globex_rows = populate(globex, "Globex")
    return World(
        acme=acme,
        globex=globex,
        owner=login(acme.organization, "owner", "acme-owner"),
        member=login(acme.organization, "member", "acme-member"),
        globex_rows=globex_rows,
    )


def changelist(model: type) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change_page(obj) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def test_every_registered_admin_is_scoped_to_organizations_or_for_operators_only() -> None:
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, OrganizationScopedAdmin | OperatorOnlyAdmin), model


@pytest.mark.parametrize("who", ["owner", "member"])
def test_no_change_list_shows_another_organizations_row(world: World, who: str) -> None:
    client = getattr(world, who)
    for model, model_admin in admin.site._registry.items():
        response = client.get(changelist(model))
        if not isinstance(model_admin, OrganizationScopedAdmin) or not model_admin.rights.get(who):
            assert response.status_code == 403, model
            continue
        assert response.status_code == 200, model
        rows = list(response.context["cl"].result_list)
        assert rows, model  # each model has an Acme row to show
        assert {model_admin.organization_id_of(row) for row in rows} == {
            world.acme.organization.pk
        }, model
        page = response.content.decode()
        assert "Globex" not in page, model


@pytest.mark.parametrize("who", ["owner", "member"])
def test_another_organizations_rows_are_404_on_every_page(world: World, who: str) -> None:
    client = getattr(world, who)
    for model, obj in world.globex_rows.items():
        if model is CallEvent:
            continue  # no page of its own: it is shown on its call's page
        meta = obj._meta
        for view in ("change", "history", "delete"):
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=[obj.pk])
            response = client.get(url)
            assert response.status_code == 404, url
            assert "Globex" not in response.content.decode()
            assert client.post(url, {"post": "yes"}).status_code == 404, url
    assert PhoneNumber.objects.filter(organization=world.globex.organization).count() == 1


def test_a_member_cannot_move_money_even_its_own(world: World) -> None:
    acme_balance = Balance.objects.get(organization=world.acme.organization)
    globex_balance = world.globex_rows[Balance]
    before = list(Balance.objects.order_by("pk").values_list("balance_cents", flat=True))

    own = world.owner.post(
        reverse("admin:billing_balance_top_up", args=[acme_balance.pk]),
        {"amount": "-0.01", "memo": "mine"},
    )
    other = world.owner.post(
        reverse("admin:billing_balance_top_up", args=[globex_balance.pk]),
        {"amount": "-0.01", "memo": "theirs"},
    )

    assert (own.status_code, other.status_code) == (403, 404)
    assert list(Balance.objects.order_by("pk").values_list("balance_cents", flat=True)) == before
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_a_member_cannot_change_its_rate_or_cap(world: World) -> None:
    organization = world.acme.organization

    response = world.owner.post(
        change_page(organization),
        {"name": "Acme", "rate_cents_per_minute": 1, "max_concurrent_calls": 1000},
    )

    assert response.status_code == 403
    organization.refresh_from_db()
    assert (organization.rate_cents_per_minute, organization.max_concurrent_calls) == (None, None)


def test_a_member_cannot_touch_another_organizations_webhook_key(world: World) -> None:
    account = world.globex_rows[ProviderAccount]
    settings_before = dict(account.settings)

    response = world.member.post(
        change_page(account),
        {
            "organization": world.globex.organization.pk,
            "provider": "telnyx",
            "name": "mine now",
            "telnyx__connection_id": "1",
            "telnyx__public_key": "forged",
        },
    )

    assert response.status_code == 404
    account.refresh_from_db()
    assert account.settings == settings_before and account.name != "mine now"


def test_foreign_key_choices_and_look_ups_hold_only_the_members_rows(world: World) -> None:
    acme = world.acme.organization
    form = world.member.get(reverse("admin:telephony_phonenumber_add")).context["adminform"].form

    assert list(form.fields["organization"].queryset) == [acme]
    assert {a.organization_id for a in form.fields["assistant"].queryset} == {acme.pk}
    assert {a.organization_id for a in form.fields["provider_account"].queryset} == {acme.pk}
    found = world.member.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "telephony",
            "model_name": "phonenumber",
            "field_name": "assistant",
            "term": "",
        },
    ).json()
    names = {Assistant.objects.get(pk=row["id"]).organization_id for row in found["results"]}
    assert names == {acme.pk}
    popup = world.member.get(changelist(Assistant), {"_popup": "1", "_to_field": "id"})
    assert {a.organization_id for a in popup.context["cl"].result_list} == {acme.pk}


def test_filters_and_search_know_only_the_members_organizations(world: World) -> None:
    initech = make_tenant().organization
    initech.name = "Initech"
    initech.save()
    PhoneNumberFactory(organization=initech)
    member = User.objects.get(username="acme-member")
    Membership.objects.create(user=member, organization=initech, role="member")

    response = world.member.get(changelist(PhoneNumber))
    filter_choices = [
        choice["display"]
        for spec in response.context["cl"].filter_specs
        for choice in spec.choices(response.context["cl"])
    ]
    assert {"Acme", "Initech"} <= set(filter_choices)
    assert "Globex" not in filter_choices
    searched = world.member.get(changelist(PhoneNumber), {"q": "Globex"})
    assert list(searched.context["cl"].result_list) == []


def test_an_action_on_another_organizations_rows_does_nothing(world: World) -> None:
    globex_number = world.globex_rows[PhoneNumber]

    world.member.post(
        changelist(PhoneNumber),
        {"action": "delete_selected", "_selected_action": [globex_number.pk], "post": "yes"},
    )

    assert PhoneNumber.objects.filter(pk=globex_number.pk).exists()


def test_a_member_adds_a_number_and_an_assistant_to_its_organization_only(world: World) -> None:
    acme, globex = world.acme.organization, world.globex.organization

    made = world.member.post(
        reverse("admin:assistants_assistant_add"),
        {
            "organization": acme.pk,
            "name": "Acme Helper",
            "welcome_message": "Hi",
            "max_call_duration_seconds": 600,
            "is_active": "on",
            "settings": "{}",
        },
    )
    assistant = Assistant.objects.get(name="Acme Helper")
    number = world.member.post(
        reverse("admin:telephony_phonenumber_add"),
        {
            "organization": acme.pk,
            "number": "+15551230000",
            "provider": "sandbox",
            "assistant": assistant.pk,
        },
    )
    foreign = world.member.post(
        reverse("admin:telephony_phonenumber_add"),
        {"organization": globex.pk, "number": "+15551230001", "provider": "sandbox"},
    )

    assert (made.status_code, number.status_code, foreign.status_code) == (302, 302, 200)
    assert assistant.organization == acme
    assert PhoneNumber.objects.get(number="+15551230000").assistant == assistant
    assert "organization" in foreign.context["adminform"].form.errors
    assert not PhoneNumber.objects.filter(number="+15551230001").exists()


def test_an_owner_creates_api_keys_for_its_organization_only(world: World) -> None:
    acme, globex = world.acme.organization, world.globex.organization

    world.owner.post(
        changelist(Organization),
        {"action": "create_api_key", "_selected_action": [acme.pk, globex.pk]},
    )
    refused = world.member.post(
        changelist(Organization), {"action": "create_api_key", "_selected_action": [acme.pk]}
    )

    assert ApiKey.objects.filter(organization=acme, name="admin").count() == 1
    assert not ApiKey.objects.filter(organization=globex, name="admin").exists()
    assert refused.status_code == 200  # Django answers "no action selected"
    assert ApiKey.objects.filter(name="admin").count() == 1


def test_an_owner_adds_a_member_who_can_then_log_in(world: World) -> None:
    acme, globex = world.acme.organization, world.globex.organization
    url = reverse("admin:burki_membership_add")

    foreign = world.owner.post(
        url,
        {"username": "spy", "password": PASSWORD, "organization": globex.pk, "role": "owner"},
    )
    taken = world.owner.post(
        url,
        {"username": "acme-member", "password": PASSWORD, "organization": acme.pk},
    )
    added = world.owner.post(
        url,
        {"username": "new-hire", "password": PASSWORD, "organization": acme.pk, "role": "member"},
    )

    assert "organization" in foreign.context["adminform"].form.errors
    assert "username" in taken.context["adminform"].form.errors
    assert added.status_code == 302
    assert not User.objects.filter(username="spy").exists()
    membership = Membership.objects.get(user__username="new-hire")
    assert (membership.organization, membership.role, membership.user.is_staff) == (
        acme,
        "member",
        True,
    )
    client = Client()
    assert client.login(username="new-hire", password=PASSWORD)
    assert client.get(changelist(PhoneNumber)).status_code == 200
    assert client.get(changelist(Membership)).status_code == 403


def test_a_call_page_shows_no_other_organizations_data_and_its_own_read_only(world) -> None:
    acme_call = Call.objects.get(organization=world.acme.organization)

    page = world.member.get(change_page(acme_call))

    assert page.status_code == 200
    assert "Welcome to Acme" in page.content.decode()
    assert world.member.post(change_page(acme_call), {"status": "completed"}).status_code == 403
    acme_call.refresh_from_db()
    assert acme_call.status == "queued"


def test_a_staff_user_of_no_organization_sees_nothing(db) -> None:
    make_tenant()
    user = User.objects.create_user("drifter", password=PASSWORD, is_staff=True)
    client = Client()
    client.force_login(user)

    index = client.get(reverse("admin:index"))

    assert index.status_code == 200
    assert index.context["app_list"] == []
    assert client.get(changelist(PhoneNumber)).status_code == 403


def test_an_organization_keeps_at_least_one_owner(world: World) -> None:
    """An owner could demote or delete the organization's last owner (itself included), leaving
    nobody who can manage its keys and members but an operator."""
    acme = world.acme.organization
    (last,) = Membership.objects.filter(organization=acme, role="owner")
    page = change_page(last)

    demoted = world.owner.post(page, {"role": "member"})
    deleted = world.owner.post(page.replace("/change/", "/delete/"), {"post": "yes"})
    bulk = world.owner.post(
        changelist(Membership),
        {"action": "delete_selected", "_selected_action": [last.pk], "post": "yes"},
    )

    assert demoted.status_code == 200
    assert demoted.context["adminform"].form.errors == {
        "role": ["An organization keeps at least one owner: make another member owner first."]
    }
    assert deleted.status_code == 403
    assert bulk.status_code in (200, 302)
    last.refresh_from_db()
    assert last.role == "owner"

    member = Membership.objects.get(organization=acme, role="member")
    assert world.owner.post(change_page(member), {"role": "owner"}).status_code == 302
    assert world.owner.post(page, {"role": "member"}).status_code == 302
    roles = dict(Membership.objects.filter(organization=acme).values_list("pk", "role"))
    assert roles == {last.pk: "member", member.pk: "owner"}

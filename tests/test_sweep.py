"""No hold outlives its call: the sweep settles placed calls whose end we never heard of, from
the provider's own record, or by its rule once the provider has long been unable to tell."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
import responses
from django.utils import timezone

from billing.models import Balance
from calls import tasks
from calls.models import Call
from calls.services import call_apply_event, call_heard_from, calls_sweep
from telephony.models import SipTrunk
from telephony.providers.base import StatusEvent
from telephony.providers.sandbox import SandboxProvider
from telephony.sip import control as sip_control
from tests.conftest import Tenant, assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory
from tests.test_twilio import ACCOUNT_SID, CALLS_URL, initiate, signed_post, twilio_created

SIDS = ["CA" + f"{i:032x}" for i in range(1, 7)]


def record_url(sid: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"


def twilio_record(sid: str, status: str, duration: str | None = None) -> dict:
    return {"sid": sid, "status": status, "duration": duration, "to": "+15559876543"}


def answered_twilio_call(tenant: Tenant, sid: str) -> Call:
    """A Twilio call that was placed and answered, whose final webhook is then lost."""
    with responses.RequestsMock() as api:
        api.post(CALLS_URL, json=twilio_created(sid), status=201)
        assert initiate(tenant).status_code == 200
    call = Call.objects.get(call_sid=sid)
    path = f"/webhooks/calls/{call.pk}/status"
    answered = {"CallSid": sid, "CallStatus": "in-progress"}
    assert signed_post(tenant.client, path, answered).status_code == 200
    call.refresh_from_db()
    assert call.status == "in-progress"
    return call


def long_over(*calls: Call, minutes: int = 5) -> None:
    """Move the calls' last possible moment into the past: the provider has ended them."""
    past = timezone.now() - timedelta(minutes=minutes)
    Call.objects.filter(pk__in=[c.pk for c in calls]).update(live_until=past)


@pytest.fixture
def broke_after_five(db) -> Tenant:
    """$5 at 10 cents a minute: five 10-minute calls hold all of it."""
    tenant = make_tenant(balance_cents=500)
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567", twilio=True)
    return tenant


def test_lost_final_webhooks_no_longer_hold_the_money_for_ever(broke_after_five: Tenant) -> None:
    tenant = broke_after_five
    calls = [answered_twilio_call(tenant, sid) for sid in SIDS[:5]]
    with responses.RequestsMock():  # dials nothing
        assert initiate(tenant).status_code == 402  # everything is held
    long_over(*calls)

    with responses.RequestsMock() as api:
        for call in calls:
            api.get(record_url(call.call_sid), json=twilio_record(call.call_sid, "completed", "42"))
        report = calls_sweep()

    assert (report.settled, report.estimated, report.left) == (5, 0, 0)
    for call in calls:
        call.refresh_from_db()
        assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 42, 7)
        assert call.settled_by == "provider"
        assert call.events.last().source == "sweep"
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents, balance.open_holds) == (500 - 35, 0, 0)
    assert_money_consistent(tenant.organization)
    with responses.RequestsMock() as api:
        api.post(CALLS_URL, json=twilio_created(SIDS[5]), status=201)
        assert initiate(tenant).status_code == 200


def test_a_call_not_yet_over_is_left_alone(broke_after_five: Tenant) -> None:
    call = answered_twilio_call(broke_after_five, SIDS[0])

    with responses.RequestsMock():  # asks nothing: the call may still be talking
        report = calls_sweep()

    assert (report.settled, report.left) == (0, 0)
    call.refresh_from_db()
    assert (call.status, call.cost_cents) == ("in-progress", None)


def test_a_provider_that_still_says_live_is_asked_again_on_the_next_run(
    broke_after_five: Tenant,
) -> None:
    call = answered_twilio_call(broke_after_five, SIDS[0])
    long_over(call)

    with responses.RequestsMock() as api:
        api.get(record_url(call.call_sid), json=twilio_record(call.call_sid, "in-progress"))
        report = calls_sweep()

    assert (report.settled, report.left) == (0, 1)
    call.refresh_from_db()
    assert (call.status, call.cost_cents) == ("in-progress", None)
    assert_money_consistent(broke_after_five.organization)


class TestWhenTheProviderNeverTells:
    def test_an_answered_call_is_charged_its_time_limit_and_flagged(
        self, broke_after_five: Tenant, settings
    ) -> None:
        call = answered_twilio_call(broke_after_five, SIDS[0])
        long_over(call, minutes=10)
        settings.CALL_SWEEP_GIVE_UP_SECONDS = 15 * 60

        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json={"message": "boom"}, status=500)
            first = calls_sweep()
        call.refresh_from_db()
        assert (first.left, call.status) == (1, "in-progress")  # asked again next time

        settings.CALL_SWEEP_GIVE_UP_SECONDS = 5 * 60
        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json={"message": "boom"}, status=500)
            last = calls_sweep()

        assert (last.settled, last.estimated) == (0, 1)
        call.refresh_from_db()
        assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 600, 100)
        assert call.settled_by == "estimate"
        assert call.end_reason == "Never told how it ended: answered, so charged its time limit."
        assert_money_consistent(broke_after_five.organization)

    def test_a_call_never_answered_is_released(self, broke_after_five: Tenant, settings) -> None:
        with responses.RequestsMock() as api:
            api.post(CALLS_URL, json=twilio_created(SIDS[0]), status=201)
            assert initiate(broke_after_five).status_code == 200
        call = Call.objects.get()
        long_over(call, minutes=10)
        settings.CALL_SWEEP_GIVE_UP_SECONDS = 0

        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), status=404, json={"message": "not found"})
            report = calls_sweep()

        assert report.estimated == 1
        call.refresh_from_db()
        assert (call.status, call.cost_cents, call.settled_by) == ("failed", 0, "estimate")
        balance = Balance.objects.get(organization=broke_after_five.organization)
        assert (balance.balance_cents, balance.held_cents) == (500, 0)
        assert_money_consistent(broke_after_five.organization)


def test_a_sandbox_call_whose_steps_were_lost_is_settled_from_its_script(tenant: Tenant) -> None:
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    with mock.patch.object(tasks.call_play_simulated, "apply_async"):  # the broker lost them
        response = tenant.client.post(
            "/calls/initiate",
            {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"},
            format="json",
        )
    call = Call.objects.get(pk=response.json()["call_id"])
    Call.objects.filter(pk=call.pk).update(initiated_at=timezone.now() - timedelta(minutes=15))
    long_over(call)
    talk = SandboxProvider.talk_seconds(call.call_sid, call.time_limit_seconds)

    report = calls_sweep()

    assert report.settled == 1
    call.refresh_from_db()
    assert (call.status, call.duration_seconds, call.settled_by) == ("completed", talk, "provider")
    assert call.ended_at == call.initiated_at + timedelta(seconds=4 + talk)
    assert_money_consistent(tenant.organization)


def test_a_call_that_cannot_be_swept_does_not_stop_the_others(broke_after_five: Tenant) -> None:
    first, second = (answered_twilio_call(broke_after_five, sid) for sid in SIDS[:2])
    long_over(first, minutes=6)
    long_over(second)

    with responses.RequestsMock() as api:
        api.get(record_url(first.call_sid), body="not json", status=200)
        api.get(record_url(second.call_sid), json=twilio_record(second.call_sid, "busy", "0"))
        report = calls_sweep()

    assert (report.settled, report.left) == (1, 1)
    second.refresh_from_db()
    assert (second.status, second.cost_cents) == ("busy", 0)


class TestAnEndOnlyAWebhookReported:
    """Twilio's webhooks are signed with the account's own token: their end is recorded, the
    money held until Twilio's record says how the call ended."""

    def test_the_sweep_settles_it_on_the_record_once_the_record_has_it(
        self, broke_after_five: Tenant
    ) -> None:
        call = answered_twilio_call(broke_after_five, SIDS[0])
        ended = {"CallSid": call.call_sid, "CallStatus": "completed", "CallDuration": "0"}
        signed_post(broke_after_five.client, f"/webhooks/calls/{call.pk}/status", ended)
        Call.objects.filter(pk=call.pk).update(ended_at=timezone.now() - timedelta(minutes=5))

        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json=twilio_record(call.call_sid, "completed", "90"))
            report = calls_sweep()

        assert report.settled == 1
        call.refresh_from_db()
        assert (call.duration_seconds, call.cost_cents, call.settled_by) == (90, 15, "provider")
        assert_money_consistent(broke_after_five.organization)

    def test_if_twilio_never_gives_its_record_the_webhooks_figure_is_used_at_last(
        self, broke_after_five: Tenant, settings
    ) -> None:
        call = answered_twilio_call(broke_after_five, SIDS[0])
        ended = {"CallSid": call.call_sid, "CallStatus": "completed", "CallDuration": "42"}
        signed_post(broke_after_five.client, f"/webhooks/calls/{call.pk}/status", ended)
        past = timezone.now() - timedelta(minutes=10)
        Call.objects.filter(pk=call.pk).update(ended_at=past, live_until=past)
        settings.CALL_SWEEP_GIVE_UP_SECONDS = 15 * 60

        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json={"message": "down"}, status=503)
            first = calls_sweep()
        call.refresh_from_db()
        assert (first.left, call.cost_cents) == (1, None)  # held, asked again next run

        settings.CALL_SWEEP_GIVE_UP_SECONDS = 5 * 60
        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json={"message": "down"}, status=503)
            last = calls_sweep()

        assert last.settled == 1
        call.refresh_from_db()
        assert (call.duration_seconds, call.cost_cents, call.settled_by) == (42, 7, "webhook")
        assert_money_consistent(broke_after_five.organization)

    def test_an_early_end_does_not_outwait_a_record_that_says_the_call_goes_on(
        self, broke_after_five: Tenant, settings
    ) -> None:
        """A "completed, 0 s" signed by the organization an hour before the call could end:
        while Twilio's record says the call is in progress, the sweep keeps asking."""
        call = answered_twilio_call(broke_after_five, SIDS[0])
        forged = {"CallSid": call.call_sid, "CallStatus": "completed", "CallDuration": "0"}
        signed_post(broke_after_five.client, f"/webhooks/calls/{call.pk}/status", forged)
        Call.objects.filter(pk=call.pk).update(ended_at=timezone.now() - timedelta(hours=2))
        settings.CALL_SWEEP_GIVE_UP_SECONDS = 60  # long past, counted from the reported end

        with responses.RequestsMock() as api:
            api.get(record_url(call.call_sid), json=twilio_record(call.call_sid, "in-progress"))
            report = calls_sweep()

        assert (report.settled, report.left) == (0, 1)
        call.refresh_from_db()
        assert (call.cost_cents, call.settled_by) == (None, None)
        assert_money_consistent(broke_after_five.organization)


def test_a_forged_end_frees_no_slot_under_the_cap(broke_after_five: Tenant) -> None:
    """With a cap of 2, ending both calls by webhooks the organization signed itself does not
    let a third be dialled until Twilio's own record says they are over."""
    tenant = broke_after_five
    tenant.organization.max_concurrent_calls = 2
    tenant.organization.save()
    calls = [answered_twilio_call(tenant, sid) for sid in SIDS[:2]]
    for call in calls:
        forged = {"CallSid": call.call_sid, "CallStatus": "completed", "CallDuration": "0"}
        assert signed_post(tenant.client, f"/webhooks/calls/{call.pk}/status", forged).json() == {
            "detail": "Applied."
        }

    with responses.RequestsMock():  # dials nothing
        third = initiate(tenant)

    assert third.status_code == 429
    assert Call.objects.count() == 2
    assert_money_consistent(tenant.organization)


SIP_AGENT = "127.0.0.1:25079"
SIP_SECRET = "sweep-test-secret"


class TestACallWhoseSipAgentWentSilent:
    """A SIP agent stamps its calls every few seconds; one killed without a word (SIGKILL, its
    machine lost) leaves calls that stop being stamped. The next sweep settles them at the
    moment they were last heard to be up, not at their time limit an hour later."""

    @pytest.fixture
    def agent(self, settings):
        """A stand-in for the agents' control channel: it dials, and says which calls it
        still carries."""
        carried: list[dict] = []

        def handle(payload: dict) -> dict:
            if payload["op"] == "dial":
                return {"ok": True, "call_sid": f"{payload['call_id']}@sip"}
            return {"ok": True, "calls": carried}

        server = sip_control.ControlServer(SIP_AGENT, handle, SIP_SECRET)
        server.start()
        settings.SIP_AGENTS = [SIP_AGENT]
        settings.SIP_AGENT_SECRET = SIP_SECRET
        settings.SIP_AGENT_TIMEOUT_SECONDS = 1.0
        settings.SIP_AGENT_SILENT_SECONDS = 30
        yield carried
        server.shutdown()
        server.server_close()

    def sip_call(self, tenant: Tenant, *, answered: bool) -> Call:
        SipTrunk.objects.create(
            organization=tenant.organization, name="Carrier", gateway="sip.carrier.test"
        )
        PhoneNumberFactory(organization=tenant.organization, number="+15551230000", provider="sip")
        body = {"from_phone_number": "+15551230000", "to_phone_number": "+15559876543"}
        response = tenant.client.post("/calls/initiate", body, format="json")
        assert response.status_code == 200, response.json()
        call = Call.objects.get(pk=response.json()["call_id"])
        state = "in-progress" if answered else "ringing"
        applied = call_apply_event(
            call=call, event=StatusEvent(state, provider_call_id=call.call_sid), source="sip"
        )
        assert applied
        call.refresh_from_db()
        return call

    def test_an_answered_call_is_charged_to_when_it_was_last_heard(
        self, broke_after_five: Tenant, agent
    ) -> None:
        call = self.sip_call(broke_after_five, answered=True)
        heard = call.answered_at + timedelta(seconds=125)
        assert call_heard_from(call_ids=[str(call.pk)], at=heard) == 1

        report = calls_sweep(now=heard + timedelta(seconds=31))

        assert (report.settled, report.estimated, report.left) == (1, 0, 0)
        call.refresh_from_db()
        assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 125, 21)
        assert (call.settled_by, call.ended_at) == ("agent", heard)
        assert call.end_reason.startswith("Its SIP agent stopped mid-call")
        balance = Balance.objects.get(organization=broke_after_five.organization)
        assert (balance.balance_cents, balance.held_cents, balance.open_holds) == (479, 0, 0)
        assert_money_consistent(broke_after_five.organization)

    def test_a_ringing_call_is_released(self, broke_after_five: Tenant, agent) -> None:
        call = self.sip_call(broke_after_five, answered=False)
        heard = timezone.now()
        call_heard_from(call_ids=[str(call.pk)], at=heard)

        report = calls_sweep(now=heard + timedelta(seconds=31))

        assert report.settled == 1
        call.refresh_from_db()
        assert (call.status, call.cost_cents, call.settled_by) == ("failed", 0, "agent")
        balance = Balance.objects.get(organization=broke_after_five.organization)
        assert (balance.balance_cents, balance.held_cents) == (500, 0)
        assert_money_consistent(broke_after_five.organization)

    def test_with_no_agent_left_to_ask_it_is_settled_all_the_same(
        self, broke_after_five: Tenant, agent, settings
    ) -> None:
        call = self.sip_call(broke_after_five, answered=True)
        heard = call.answered_at + timedelta(seconds=60)
        call_heard_from(call_ids=[str(call.pk)], at=heard)
        settings.SIP_AGENTS = ["127.0.0.1:25191"]  # the only agent was killed: nothing listens

        report = calls_sweep(now=heard + timedelta(seconds=31))

        assert report.settled == 1
        call.refresh_from_db()
        assert (call.status, call.duration_seconds, call.settled_by) == ("completed", 60, "agent")

    def test_a_call_heard_from_recently_is_left_alone(
        self, broke_after_five: Tenant, agent
    ) -> None:
        call = self.sip_call(broke_after_five, answered=True)
        heard = timezone.now()
        call_heard_from(call_ids=[str(call.pk)], at=heard)

        report = calls_sweep(now=heard + timedelta(seconds=29))

        assert (report.settled, report.left) == (0, 0)
        call.refresh_from_db()
        assert (call.status, call.cost_cents, call.settled_by) == ("in-progress", None, None)

    def test_a_call_an_agent_still_carries_is_left_to_it(
        self, broke_after_five: Tenant, agent
    ) -> None:
        call = self.sip_call(broke_after_five, answered=True)
        heard = timezone.now()
        call_heard_from(call_ids=[str(call.pk)], at=heard)
        agent.append({"state": "in-progress", "sip_call_id": call.call_sid})  # only late

        report = calls_sweep(now=heard + timedelta(seconds=31))

        assert (report.settled, report.left) == (0, 1)
        call.refresh_from_db()
        assert (call.status, call.cost_cents) == ("in-progress", None)

    def test_an_ended_call_is_not_stamped(self, broke_after_five: Tenant, agent) -> None:
        call = self.sip_call(broke_after_five, answered=True)
        ended = StatusEvent("completed", provider_call_id=call.call_sid, duration_seconds=7)
        assert call_apply_event(call=call, event=ended, source="sip", settled_by="agent")

        assert call_heard_from(call_ids=[str(call.pk)], at=timezone.now()) == 0

        call.refresh_from_db()
        assert (call.last_heard_at, call.duration_seconds) == (None, 7)

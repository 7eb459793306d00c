"""A small chaos run: Twilio as an unlucky operator meets it, through the real SDK.

A stateful stand-in for Twilio's REST API (at the transport, with `responses`) places every
call it is asked to and keeps its truth (how it ended, how long it talked); some creates answer
only after our time-out, though the call is placed anyway. Its signed status webhooks reach us
shuffled, 30 % of them lost and 20 % twice. Then the background work runs as the worker would
(the settle tasks, reconcile, the sweep, with time moved on instead of waited for), and every
call must be charged exactly Twilio's truth: no stranded hold, no call dialled twice, and a
ledger that reconciles to the cent.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import requests
import responses
from django.db.models import F
from django.utils import timezone

from billing.models import Balance
from billing.services import cost_cents
from calls.models import Call, CallEvent
from calls.services import call_reconcile_stale, call_settle_from_record, calls_sweep
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import PhoneNumberFactory
from tests.test_twilio import CALLS_URL, signed_post

CALLS = 40
SEED = 20261202
FROM = "+15551234567"


@dataclass
class Truth:
    """What Twilio knows of one call it placed."""

    sid: str
    to: str
    our_call_id: str
    outcome: str  # completed, busy, no-answer
    talked: int
    created: datetime
    late: bool = False  # answered after our time-out


class FakeTwilio:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calls: dict[str, Truth] = {}
        self.creates = 0

    def install(self, mock: responses.RequestsMock) -> None:
        mock.add_callback(responses.POST, CALLS_URL, callback=self.create)
        mock.add_callback(responses.GET, CALLS_URL, callback=self.list)  # any query
        record = re.escape(CALLS_URL.removesuffix(".json")) + r"/CA[0-9a-f]{32}\.json"
        mock.add_callback(responses.GET, re.compile(record), callback=self.fetch)

    def create(self, request):  # type: ignore[no-untyped-def]
        self.creates += 1
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        our_call_id = urlsplit(form["StatusCallback"]).path.split("/")[3]
        sid = "CA" + f"{self.rng.getrandbits(128):032x}"
        outcome = self.rng.choices(["completed", "busy", "no-answer"], [8, 1, 1])[0]
        talked = self.rng.randint(5, 300) if outcome == "completed" else 0
        truth = Truth(sid, form["To"], our_call_id, outcome, talked, timezone.now())
        self.calls[sid] = truth
        if self.rng.random() < 0.10:
            # Placed, but the answer comes after we stopped waiting.
            truth.late = True
            raise requests.exceptions.ReadTimeout("read timed out")
        return 201, {}, f'{{"sid": "{sid}", "status": "queued"}}'

    def fetch(self, request):  # type: ignore[no-untyped-def]
        sid = request.path_url.rsplit("/", 1)[1].removesuffix(".json")
        truth = self.calls[sid]
        return 200, {}, _json(self.resource(truth))

    def list(self, request):  # type: ignore[no-untyped-def]
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        found = [
            self.resource(t)
            for t in self.calls.values()
            if t.to == query.get("To") and query.get("From") == FROM
        ]
        return 200, {}, _json({"calls": found, "next_page_uri": None, "page": 0, "page_size": 20})

    @staticmethod
    def resource(truth: Truth) -> dict[str, object]:
        return {
            "sid": truth.sid,
            "status": truth.outcome,
            "duration": str(truth.talked),
            "to": truth.to,
            "from": FROM,
            "date_created": truth.created.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }

    def webhooks(self, truth: Truth) -> list[dict[str, str]]:
        """Every status callback Twilio sends for the call, in the order it sends them."""
        events = [{"CallSid": truth.sid, "CallStatus": "ringing"}]
        if truth.outcome == "completed":
            events.append({"CallSid": truth.sid, "CallStatus": "in-progress"})
            events.append(
                {"CallSid": truth.sid, "CallStatus": "completed", "CallDuration": str(truth.talked)}
            )
        else:
            events.append({"CallSid": truth.sid, "CallStatus": truth.outcome})
        return events


def _json(body: object) -> str:
    return json.dumps(body)


def test_every_call_is_charged_twilios_truth_whatever_the_webhooks_do(
    client, tenant: Tenant
) -> None:
    rng = random.Random(SEED)
    PhoneNumberFactory(organization=tenant.organization, number=FROM, twilio=True)
    tenant.organization.max_concurrent_calls = CALLS
    tenant.organization.save()
    twilio = FakeTwilio(rng)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        twilio.install(mock)
        answers = [
            tenant.client.post(
                "/calls/initiate",
                {"from_phone_number": FROM, "to_phone_number": f"+1555987{i:04d}"},
                format="json",
            ).status_code
            for i in range(CALLS)
        ]
        # Twilio's callbacks: shuffled, 30 % lost, 20 % twice.
        # And one call answered late loses every callback: only Twilio's list can tell of it.
        unheard_of = next(t for t in twilio.calls.values() if t.late)
        deliveries = []
        for truth in twilio.calls.values():
            for event in twilio.webhooks(truth):
                if truth is unheard_of:
                    continue
                if rng.random() < 0.30:
                    continue
                deliveries += [(truth, event)] * (2 if rng.random() < 0.20 else 1)
        rng.shuffle(deliveries)
        for truth, event in deliveries:
            path = f"/webhooks/calls/{truth.our_call_id}/status"
            assert signed_post(client, path, event).status_code == 200

        # The worker: each ended call settled on Twilio's record; then, time having passed,
        # reconcile and the sweep take what is left.
        for call in Call.objects.filter(cost_cents__isnull=True, ended_at__isnull=False):
            call_settle_from_record(call_id=call.pk)
        passed = timedelta(hours=2)  # for us and for Twilio alike
        Call.objects.update(
            created_at=F("created_at") - passed, live_until=F("live_until") - passed
        )
        for truth in twilio.calls.values():
            truth.created -= passed
        call_reconcile_stale()
        calls_sweep()

    assert twilio.creates == CALLS  # nothing was dialled twice
    assert answers.count(504) > 0 and set(answers) <= {200, 504}  # some answered late
    by_id = {t.our_call_id: t for t in twilio.calls.values()}
    charged_truth = 0
    for call in Call.objects.all():
        truth = by_id[str(call.pk)]
        expected = cost_cents(seconds=truth.talked, rate_cents_per_minute=10)
        assert (call.call_sid, call.status, call.cost_cents) == (
            truth.sid,
            truth.outcome,
            expected,
        ), call.pk
        charged_truth += call.cost_cents == expected
    assert charged_truth == CALLS
    # What the run went through: each way a call's truth reached us was taken at least once.
    assert set(Call.objects.values_list("settled_by", flat=True)) == {"provider"}
    sources = set(CallEvent.objects.values_list("source", flat=True))
    assert {"twilio", "sweep", "reconcile"} <= sources, sources
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.held_cents, balance.open_holds) == (0, 0)  # no stranded hold
    assert_money_consistent(tenant.organization)

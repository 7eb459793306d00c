"""What every telephony provider must do, as one suite run against each of them.

Each provider has a driver below that knows how to fake its API at the transport (so the real
SDK code runs), how to sign its webhooks and how to build each of its lifecycle events. The
cases are written once against the drivers. A new provider is done when it has a driver in
DRIVERS and passes every case that applies to it.

A driver says which cases apply through its flags (`dials_over_the_wire`, `sends_webhooks`,
`signs_a_timestamp`, `plays_out_calls`, `can_find_calls`, `failures`); those that are also the
provider's own capability flags must say what the provider says. A provider whose events do not
arrive as webhooks (a SIP trunk driven by its own agent) overrides `report` and `hand_over` to
deliver them its own way, sets `sends_webhooks = False`, and runs every other case unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from unittest import mock
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
import requests
import responses
import respx
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from twilio.request_validator import RequestValidator

from billing.models import Balance, LedgerEntry
from calls.errors import ProviderTimedOut
from calls.management.commands.sip_agent import report as sip_report
from calls.models import Call, CallEvent
from calls.selectors import calls_in_progress
from calls.services import (
    ReconcileReport,
    call_play_simulated,
    call_reconcile_stale,
    call_settle_from_record,
    calls_sweep,
)
from telephony.models import PhoneNumber, ProviderAccount, SipTrunk
from telephony.providers import get_provider
from telephony.providers.base import StatusEvent, WebhookRequest
from telephony.sip import control as sip_control
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import (
    TELNYX_API_KEY,
    TELNYX_CONNECTION_ID,
    VONAGE_APPLICATION_ID,
    VONAGE_SIGNATURE_SECRET,
    AssistantFactory,
    PhoneNumberFactory,
    telnyx_signing_key,
    vonage_private_key,
)
from tests.test_query_budget import FINAL_STATUS, FINAL_STATUS_HELD, STATUS, VERDICT
from webhooks.models import WebhookEvent

FROM = "+15551234567"
TO = "+15559876543"
PUBLIC_BASE = "https://burki.test"
MEDIA_STREAM_URL = "wss://media.burki.test/stream"
TIMED_OUT = {"detail": ProviderTimedOut.default_message}  # and the call_id to follow


@dataclass(frozen=True)
class Webhook:
    """One request a provider sends us, before it is signed."""

    body: bytes
    content_type: str
    form: dict[str, str] | None = None  # what a form-encoded body holds (Twilio signs these)


@dataclass(frozen=True)
class Failure:
    status: int
    body: dict[str, str]
    attempts: int = 1  # how many requests the SDK sends before giving up
    error: str = ""  # what the call row records, when it says more than the response

    @property
    def recorded(self) -> str:
        return self.error or self.body["detail"]


@dataclass
class Wire:
    """The faked transport of one test: what was sent, and the mock to program."""

    mock: Any
    sent: list[Any] = field(default_factory=list)


class Driver:
    name: ClassVar[str]
    # Whether the provider talks to anyone (the sandbox does not, so has no wire to assert on).
    dials_over_the_wire: ClassVar[bool] = True
    # Whether its webhooks reach us (the sandbox sends none and rejects every one).
    sends_webhooks: ClassVar[bool] = True
    # Whether its answers and lifecycle events reach us from outside (the sandbox plays its
    # calls out in-process, so those cases do not apply to it).
    plays_out_calls: ClassVar[bool] = True
    # Whether its signature covers a time, so a replayed old webhook can be told apart.
    signs_a_timestamp: ClassVar[bool] = False
    failures: ClassVar[tuple[str, ...]] = ("4xx", "5xx", "timeout", "refused")
    # The states the lifecycle in `lifecycle()` records on the call's timeline.
    timeline: ClassVar[list[str]] = ["ringing", "in-progress", "completed"]
    # Whether events of other legs of the call (a websocket, a transfer) reach us and must be
    # told apart (a SIP agent reports only the legs it dialled for the call).
    reports_other_legs: ClassVar[bool] = True
    # Whether it can be asked if it placed a call we never heard back about.
    can_find_calls: ClassVar[bool] = True
    # Whether it can be asked for its record of a placed call, and that record can say the
    # call ended and how long it talked (a SIP agent's record only says it still carries it).
    can_fetch_calls: ClassVar[bool] = True
    keeps_a_record_of_the_end: ClassVar[bool] = True
    # Whether the account's own secret signs its webhooks, so a call is settled on the
    # provider's record, fetched after the webhook (`settle_on_the_record`).
    account_can_forge_webhooks: ClassVar[bool] = False
    # Whether it runs answering-machine detection, and can move a call on to another number.
    detects_machines: ClassVar[bool] = True
    can_transfer: ClassVar[bool] = True
    # Its machine detection's results: (what it sends, the answered_by it means, whether it says
    # the greeting ended).
    verdicts: ClassVar[list[tuple[str, str, bool]]] = []

    def number(self, tenant: Tenant) -> PhoneNumber:
        return PhoneNumberFactory(
            organization=tenant.organization, number=FROM, **{self.name: True}
        )

    @contextmanager
    def wire(self) -> Iterator[Wire]:
        yield Wire(mock=None)

    def accept(self, wire: Wire) -> str:
        """Make the next dial succeed; returns the provider's call id it will answer with."""
        raise NotImplementedError

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        """Make the next dial fail that way; returns the number to dial and what we expect."""
        raise NotImplementedError

    def keep_record(self, wire: Wire, call: Call, *, talked: int, state: str = "completed") -> None:
        """Make the provider's record of `call` say it ended (`state`) after `talked` s."""
        raise NotImplementedError

    def accept_hang_up(self, wire: Wire, call: Call) -> None:
        """Make the provider accept the next request to end `call`."""

    def hung_up(self, wire: Wire) -> Any:
        """What the provider was asked to end the call with, as a comparable value."""
        return None

    def assert_placed(self, wire: Wire, call: Call) -> None:
        """The request on the wire carries our call id, time limit and callback URLs."""
        raise NotImplementedError

    def detection_sent(self, wire: Wire) -> dict[str, Any]:
        """What the dial on the wire asked of the provider's machine detection."""
        raise NotImplementedError

    def commands(self, wire: Wire) -> list[Any]:
        """Every request sent to the provider about a live call, as comparable values."""
        raise NotImplementedError

    def accept_commands(self, wire: Wire, call: Call) -> None:
        """Make the provider accept whatever is asked of `call` next (hang up, speak, transfer)."""

    def verdict(self, call: Call, sent: str, *, leg: str = "") -> Webhook:
        """The provider's machine-detection result `sent` (one of `verdicts`) for the call."""
        raise NotImplementedError

    def message_played(self, call: Call) -> Webhook | None:
        """The provider's word that the message it was told to say has been said (None: it
        ends the call itself after the message)."""
        return None

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        """The provider's event for the call (`leg`: as if for another leg with that id)."""
        raise NotImplementedError

    def lifecycle(self, call: Call) -> list[Webhook]:
        """Everything before the final event, in the order the provider sends it."""
        return [self.event(call, state) for state in ("initiated", "ringing", "in-progress")]

    def answer_request(self, call: Call) -> Webhook:
        raise NotImplementedError

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        raise NotImplementedError

    def rekey(self, account: ProviderAccount) -> None:
        """Give the account webhook credentials that nobody signs with."""
        raise NotImplementedError

    def report(self, client, call: Call, webhook: Webhook) -> tuple[int, Any]:
        """Deliver one of the call's events the way the provider does: a signed status webhook.
        Returns the status and body we answered with."""
        response = signed(client, self, f"/webhooks/calls/{call.pk}/status", webhook)
        return response.status_code, response.json()

    def hand_over(self, client, call: Call) -> tuple[str, dict[str, str]]:
        """The answered call reaches the media stream: where, and with which parameters."""
        path = f"/webhooks/calls/{call.pk}/answer"
        response = signed(client, self, path, self.answer_request(call))
        assert response.status_code == 200
        return self.handed_over(response["Content-Type"], response.content)

    def handed_over(self, content_type: str, body: bytes) -> tuple[str, dict[str, str]]:
        """The media stream URL (without its query) and the parameters the answer hands it."""
        raise NotImplementedError


class SandboxDriver(Driver):
    name = "sandbox"
    dials_over_the_wire = False
    sends_webhooks = False
    plays_out_calls = False
    reports_other_legs = False
    # Its record is its script, which a test cannot rewrite (tests/test_sweep.py settles from it).
    keeps_a_record_of_the_end = False
    failures = ("4xx", "timeout")

    def number(self, tenant: Tenant) -> PhoneNumber:
        return PhoneNumberFactory(organization=tenant.organization, number=FROM)

    def accept(self, wire: Wire) -> str:
        return ""

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        if kind == "timeout":
            return "+15559870504", Failure(504, TIMED_OUT, error="Sandbox: simulated time-out.")
        detail = "Sandbox: the destination is unreachable (simulated refusal)."
        return "+15559870500", Failure(502, {"detail": detail})

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        body = json.dumps({"status": state, "duration": duration}).encode()
        return Webhook(body=body, content_type="application/json")

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        return {"Authorization": "Bearer forged"} if forged else {}

    def commands(self, wire: Wire) -> list[Any]:
        return []  # nothing leaves the process


# --- Twilio: requests, form bodies, HMAC-SHA1 over URL + form ------------------------------

TWILIO_SID = "AC" + "a" * 32
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
TWILIO_CALLS = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
TWILIO_STATUS = {"in-progress": "in-progress", "completed": "completed"}


class TwilioDriver(Driver):
    name = "twilio"
    account_can_forge_webhooks = True
    sid = "CA" + "0123456789abcdef" * 2

    @contextmanager
    def wire(self) -> Iterator[Wire]:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            wire = Wire(mock=mock)
            yield wire
            wire.sent[:] = [c.request for c in mock.calls]

    def accept(self, wire: Wire) -> str:
        wire.mock.post(TWILIO_CALLS, json={"sid": self.sid, "status": "queued"}, status=201)
        return self.sid

    def keep_record(self, wire: Wire, call: Call, *, talked: int, state: str = "completed") -> None:
        record = {"sid": call.call_sid, "status": state, "duration": str(talked)}
        wire.mock.get(TWILIO_CALLS.replace(".json", f"/{call.call_sid}.json"), json=record)

    def accept_hang_up(self, wire: Wire, call: Call) -> None:
        url = TWILIO_CALLS.replace(".json", f"/{call.call_sid}.json")
        wire.mock.post(url, json={"sid": call.call_sid, "status": "completed"})

    def hung_up(self, wire: Wire) -> Any:
        sent = wire.mock.calls[-1].request
        return sent.method, sent.url.rsplit("/", 1)[1], parse_qs(sent.body)

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        if kind == "4xx":
            message = "The 'To' number is not a valid phone number."
            wire.mock.post(
                TWILIO_CALLS, json={"code": 21211, "message": message, "status": 400}, status=400
            )
            return TO, Failure(502, {"detail": f"Twilio refused the call: {message} (error 21211)"})
        if kind == "5xx":
            wire.mock.post(
                TWILIO_CALLS,
                json={"code": 20500, "message": "Internal Server Error", "status": 500},
                status=500,
            )
            detail = "Twilio refused the call: Internal Server Error (error 20500)"
            return TO, Failure(502, {"detail": detail})
        if kind == "timeout":
            wire.mock.post(TWILIO_CALLS, body=requests.ReadTimeout("read timed out"))
            return TO, Failure(504, TIMED_OUT, error="Twilio did not answer in time.")
        wire.mock.post(TWILIO_CALLS, body=requests.ConnectionError("connection refused"))
        return TO, Failure(502, {"detail": "Could not reach Twilio."})

    def assert_placed(self, wire: Wire, call: Call) -> None:
        (sent,) = wire.sent
        base = f"{PUBLIC_BASE}/webhooks/calls/{call.pk}"
        assert parse_qs(sent.body) == {
            "To": [call.to_number],
            "From": [FROM],
            "Url": [f"{base}/answer"],
            "Method": ["POST"],
            "StatusCallback": [f"{base}/status"],
            "StatusCallbackMethod": ["POST"],
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            "TimeLimit": [str(call.time_limit_seconds)],
            "Timeout": ["30"],
        }
        expected = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        assert sent.headers["Authorization"] == f"Basic {expected}"

    verdicts = [
        ("human", "human", False),
        ("machine_start", "machine", False),
        ("machine_end_beep", "machine", True),
        ("machine_end_silence", "machine", True),
        ("machine_end_other", "machine", True),
        ("fax", "fax", False),
        ("unknown", "unknown", False),
    ]

    def detection_sent(self, wire: Wire) -> dict[str, Any]:
        (sent,) = wire.sent
        body = parse_qs(sent.body)
        return {k: v for k, v in body.items() if k.startswith(("MachineDetection", "AsyncAmd"))}

    def commands(self, wire: Wire) -> list[Any]:
        return [
            (c.request.method, c.request.url.rsplit("/", 1)[1], parse_qs(c.request.body))
            for c in wire.mock.calls
        ]

    def accept_commands(self, wire: Wire, call: Call) -> None:
        self.accept_hang_up(wire, call)

    def verdict(self, call: Call, sent: str, *, leg: str = "") -> Webhook:
        # The AsyncAmdStatusCallback: no CallStatus, only the verdict.
        form = {
            "CallSid": leg or self.sid,
            "AccountSid": TWILIO_SID,
            "AnsweredBy": sent,
            "MachineDetectionDuration": "2417",
        }
        return Webhook(
            body=urlencode(form).encode(),
            content_type="application/x-www-form-urlencoded",
            form=form,
        )

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        form = {"CallSid": leg or self.sid, "AccountSid": TWILIO_SID, "CallStatus": state}
        if state == "completed":
            form["CallDuration"] = str(duration)
        return Webhook(
            body=urlencode(form).encode(),
            content_type="application/x-www-form-urlencoded",
            form=form,
        )

    def answer_request(self, call: Call) -> Webhook:
        return self.event(call, "in-progress")

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        token = "not-the-auth-token" if forged else TWILIO_TOKEN
        signature = RequestValidator(token).compute_signature(url, webhook.form or {})
        return {"X-Twilio-Signature": signature}

    def rekey(self, account: ProviderAccount) -> None:
        account.secrets = {**account.secrets, "auth_token": "another-auth-token-0123456789"}

    def handed_over(self, content_type: str, body: bytes) -> tuple[str, dict[str, str]]:
        assert content_type == "application/xml"
        stream = ET.fromstring(body).find("./Connect/Stream")  # noqa: S314 (our own TwiML)
        assert stream is not None
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return stream.get("url", ""), params


# --- Telnyx: httpx, JSON bodies, Ed25519 over "timestamp|body" ------------------------------

TELNYX_CALLS = "https://api.telnyx.com/v2/calls"


class TelnyxDriver(Driver):
    name = "telnyx"
    signs_a_timestamp = True
    can_find_calls = False
    # Telnyx reports no ringing: call.initiated, then call.answered or call.hangup.
    timeline = ["in-progress", "completed"]
    call_control_id = "v3:call-control-0123456789abcdef"

    @contextmanager
    def wire(self) -> Iterator[Wire]:
        with respx.mock(assert_all_called=False) as mock:
            wire = Wire(mock=mock)
            yield wire
            wire.sent[:] = [c.request for c in mock.calls]

    def accept(self, wire: Wire) -> str:
        wire.mock.post(TELNYX_CALLS).respond(
            200,
            json={
                "data": {
                    "call_control_id": self.call_control_id,
                    "call_leg_id": "leg-0123",
                    "call_session_id": "session-0123",
                    "is_alive": False,
                    "record_type": "call",
                }
            },
        )
        return self.call_control_id

    def accept_hang_up(self, wire: Wire, call: Call) -> None:
        wire.mock.post(f"{TELNYX_CALLS}/{call.call_sid}/actions/hangup").respond(
            200, json={"data": {"result": "ok"}}
        )

    def hung_up(self, wire: Wire) -> Any:
        sent = wire.mock.calls[-1].request
        return sent.method, sent.url.path, json.loads(sent.content)

    def keep_record(self, wire: Wire, call: Call, *, talked: int, state: str = "completed") -> None:
        # Telnyx's record says when the call ended, not how long it was answered, nor how.
        assert call.answered_at is not None
        ended = call.answered_at + timedelta(seconds=talked)
        wire.mock.get(f"{TELNYX_CALLS}/{call.call_sid}").respond(
            200,
            json={
                "data": {
                    "call_control_id": call.call_sid,
                    "call_leg_id": "leg-0123",
                    "call_session_id": "session-0123",
                    "is_alive": False,
                    "record_type": "call",
                    "call_duration": talked + 7,  # since it was dialled, ringing included
                    "start_time": (call.answered_at - timedelta(seconds=7)).isoformat(),
                    "end_time": ended.isoformat(),
                }
            },
        )

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        route = wire.mock.post(TELNYX_CALLS)
        # One retry on 5xx, time-outs and refused connections (command_id keeps it harmless).
        if kind == "4xx":
            route.respond(
                422,
                json={"errors": [{"code": "10015", "title": "Invalid value for connection_id"}]},
            )
            detail = "Telnyx refused the call: Invalid value for connection_id. (HTTP 422)"
            return TO, Failure(502, {"detail": detail})
        if kind == "5xx":
            route.respond(503, json={"errors": [{"code": "90041", "title": "Service Unavailable"}]})
            detail = "Telnyx refused the call: Service Unavailable. (HTTP 503)"
            return TO, Failure(502, {"detail": detail}, attempts=2)
        if kind == "timeout":
            route.side_effect = httpx.ReadTimeout("read timed out")
            return TO, Failure(504, TIMED_OUT, 2, "Telnyx did not answer in time.")
        route.side_effect = httpx.ConnectError("connection refused")
        return TO, Failure(502, {"detail": "Could not reach Telnyx."}, attempts=2)

    def assert_placed(self, wire: Wire, call: Call) -> None:
        (sent,) = wire.sent
        assert sent.headers["Authorization"] == f"Bearer {TELNYX_API_KEY}"
        body = json.loads(sent.content)
        stream_url = body.pop("stream_url")
        assert body == {
            "connection_id": TELNYX_CONNECTION_ID,
            "to": call.to_number,
            "from": FROM,
            "webhook_url": f"{PUBLIC_BASE}/webhooks/calls/{call.pk}/status",
            "webhook_url_method": "POST",
            "client_state": base64.b64encode(str(call.pk).encode()).decode(),
            "command_id": str(call.pk),
            "time_limit_secs": call.time_limit_seconds,
            "timeout_secs": 30,
            "stream_track": "both_tracks",
        }
        url = urlsplit(stream_url)
        assert url._replace(query="").geturl() == MEDIA_STREAM_URL
        assert dict(parse_qsl(url.query, keep_blank_values=True)) == context_of(call)

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        dialled = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
        answered = dialled + timedelta(seconds=20)  # rang for 20 s: not talk time
        occurred_at = dialled
        payload: dict[str, Any] = {
            "call_control_id": leg or self.call_control_id,
            "call_leg_id": "leg-0123",
            "call_session_id": "session-0123",
            "client_state": base64.b64encode(str(call.pk).encode()).decode(),
            "connection_id": TELNYX_CONNECTION_ID,
            "from": FROM,
            "to": call.to_number,
            "direction": "outgoing",
        }
        event_type = {
            "initiated": "call.initiated",
            "ringing": "call.initiated",
            "in-progress": "call.answered",
        }.get(state, "call.hangup")
        if event_type == "call.initiated":
            payload["state"] = "bridging"
        elif event_type == "call.answered":
            occurred_at = answered
        else:
            occurred_at = answered + timedelta(seconds=duration)
            payload.update(
                hangup_cause={
                    "completed": "normal_clearing",
                    "busy": "user_busy",
                    "no-answer": "timeout",
                }[state],
                hangup_source="callee",
                sip_hangup_cause={"completed": "200", "busy": "486", "no-answer": "487"}[state],
                # When the call was dialled, as Telnyx reports it.
                start_time=dialled.isoformat().replace("+00:00", "Z"),
                state="hangup",
            )
        envelope = {
            "data": {
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
                "payload": payload,
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": f"{PUBLIC_BASE}/webhooks/calls/{call.pk}"},
        }
        return Webhook(body=json.dumps(envelope).encode(), content_type="application/json")

    verdicts = [
        ("call.machine.detection.ended:human", "human", False),
        ("call.machine.detection.ended:machine", "machine", False),
        ("call.machine.detection.ended:not_sure", "unknown", False),
        ("call.machine.premium.detection.ended:human_residence", "human", False),
        ("call.machine.premium.detection.ended:human_business", "human", False),
        ("call.machine.premium.detection.ended:machine", "machine", False),
        ("call.machine.premium.detection.ended:fax_detected", "fax", False),
        ("call.machine.premium.detection.ended:silence", "unknown", False),
        ("call.machine.greeting.ended:beep_detected", "machine", True),
        ("call.machine.greeting.ended:ended", "machine", True),
        ("call.machine.premium.greeting.ended:beep_detected", "machine", True),
    ]

    def detection_sent(self, wire: Wire) -> dict[str, Any]:
        (sent,) = wire.sent
        body = json.loads(sent.content)
        return {k: v for k, v in body.items() if k.startswith("answering_machine")}

    def commands(self, wire: Wire) -> list[Any]:
        return [
            (c.request.method, c.request.url.path, json.loads(c.request.content or b"{}"))
            for c in wire.mock.calls
        ]

    def accept_commands(self, wire: Wire, call: Call) -> None:
        for action in ("hangup", "speak", "streaming_stop", "transfer"):
            wire.mock.post(f"{TELNYX_CALLS}/{call.call_sid}/actions/{action}").respond(
                200, json={"data": {"result": "ok"}}
            )

    def _envelope(self, call: Call, event_type: str, payload: dict[str, Any]) -> Webhook:
        envelope = {
            "data": {
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": "2026-01-05T09:30:22.000Z",
                "payload": {
                    "call_control_id": self.call_control_id,
                    "call_leg_id": "leg-0123",
                    "call_session_id": "session-0123",
                    "client_state": base64.b64encode(str(call.pk).encode()).decode(),
                    "connection_id": TELNYX_CONNECTION_ID,
                    **payload,
                },
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": f"{PUBLIC_BASE}/webhooks/calls/{call.pk}"},
        }
        return Webhook(body=json.dumps(envelope).encode(), content_type="application/json")

    def verdict(self, call: Call, sent: str, *, leg: str = "") -> Webhook:
        event_type, result = sent.split(":")
        payload = {"result": result, "from": FROM, "to": call.to_number}
        if leg:
            payload["call_control_id"] = leg
        return self._envelope(call, event_type, payload)

    def message_played(self, call: Call) -> Webhook | None:
        return self._envelope(call, "call.speak.ended", {"status": "completed"})

    def lifecycle(self, call: Call) -> list[Webhook]:
        return [self.event(call, "initiated"), self.event(call, "in-progress")]

    def answer_request(self, call: Call) -> Webhook:
        return self.event(call, "in-progress")

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        key = ed25519.Ed25519PrivateKey.generate() if forged else telnyx_signing_key()
        timestamp = str(int(time.time()) - age)
        signature = key.sign(f"{timestamp}|".encode() + webhook.body)
        return {
            "Telnyx-Signature-Ed25519": base64.b64encode(signature).decode(),
            "Telnyx-Timestamp": timestamp,
        }

    def rekey(self, account: ProviderAccount) -> None:
        raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        account.settings = {**account.settings, "public_key": base64.b64encode(raw).decode()}

    def handed_over(self, content_type: str, body: bytes) -> tuple[str, dict[str, str]]:
        assert content_type == "application/json"
        answer = json.loads(body)
        assert answer["stream_track"] == "both_tracks"
        url = urlsplit(answer["stream_url"])
        return url._replace(query="").geturl(), dict(parse_qsl(url.query, keep_blank_values=True))


# --- Vonage: requests, JSON bodies, HS256 JWT with the body's SHA-256 -----------------------

VONAGE_CALLS = "https://api.nexmo.com/v1/calls"


class VonageDriver(Driver):
    name = "vonage"
    account_can_forge_webhooks = True
    signs_a_timestamp = True
    can_find_calls = False
    call_uuid = "63f61863-4a51-4f6b-86e1-46edebcf9356"

    @contextmanager
    def wire(self) -> Iterator[Wire]:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            wire = Wire(mock=mock)
            yield wire
            wire.sent[:] = [c.request for c in mock.calls]

    def accept(self, wire: Wire) -> str:
        wire.mock.post(
            VONAGE_CALLS,
            json={
                "uuid": self.call_uuid,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            },
            status=201,
        )
        return self.call_uuid

    def keep_record(self, wire: Wire, call: Call, *, talked: int, state: str = "completed") -> None:
        record = {
            "uuid": call.call_sid,
            "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            "to": {"type": "phone", "number": TO.removeprefix("+")},
            "from": {"type": "phone", "number": FROM.removeprefix("+")},
            "status": {"no-answer": "timeout", "canceled": "cancelled"}.get(state, state),
            "direction": "outbound",
            "duration": str(talked),
            "_links": {"self": {"href": f"/v1/calls/{call.call_sid}"}},
        }
        wire.mock.get(f"{VONAGE_CALLS}/{call.call_sid}", json=record)

    def accept_hang_up(self, wire: Wire, call: Call) -> None:
        wire.mock.put(f"{VONAGE_CALLS}/{call.call_sid}", status=204)

    def hung_up(self, wire: Wire) -> Any:
        sent = wire.mock.calls[-1].request
        return sent.method, sent.url.rsplit("/", 1)[1], json.loads(sent.body)

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        if kind == "4xx":
            wire.mock.post(
                VONAGE_CALLS,
                json={
                    "type": "https://developer.nexmo.com/api-errors#bad-request",
                    "title": "Bad Request",
                    "detail": "Invalid To number.",
                },
                status=400,
            )
            detail = "Vonage refused the call: Bad Request: Invalid To number. (HTTP 400)"
            return TO, Failure(502, {"detail": detail})
        if kind == "5xx":
            wire.mock.post(VONAGE_CALLS, json={"title": "Internal Server Error"}, status=500)
            detail = "Vonage refused the call: Internal Server Error. (HTTP 500)"
            return TO, Failure(502, {"detail": detail})
        if kind == "timeout":
            wire.mock.post(VONAGE_CALLS, body=requests.ReadTimeout("read timed out"))
            return TO, Failure(504, TIMED_OUT, error="Vonage did not answer in time.")
        wire.mock.post(VONAGE_CALLS, body=requests.ConnectionError("connection refused"))
        return TO, Failure(502, {"detail": "Could not reach Vonage."})

    def assert_placed(self, wire: Wire, call: Call) -> None:
        (sent,) = wire.sent
        base = f"{PUBLIC_BASE}/webhooks/calls/{call.pk}"
        assert json.loads(sent.body) == {
            "to": [{"number": call.to_number.removeprefix("+"), "type": "phone"}],
            "from": {"number": FROM.removeprefix("+"), "type": "phone"},
            "answer_url": [f"{base}/answer"],
            "answer_method": "POST",
            "event_url": [f"{base}/status"],
            "event_method": "POST",
            "length_timer": call.time_limit_seconds,
            "ringing_timer": 30,
        }
        # The SDK signs its API token with the application's private key (a bytes header).
        scheme, token = sent.headers["Authorization"].decode().split(" ")
        claims = jwt.decode(token, vonage_private_key().public_key(), algorithms=["RS256"])
        assert (scheme, claims["application_id"]) == ("Bearer", VONAGE_APPLICATION_ID)

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        status = {"initiated": "started", "in-progress": "answered", "no-answer": "timeout"}.get(
            state, state
        )
        event: dict[str, Any] = {
            "uuid": leg or self.call_uuid,
            "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            "status": status,
            "direction": "outbound",
            "from": FROM.removeprefix("+"),
            "to": call.to_number.removeprefix("+"),
            "timestamp": "2026-01-05T09:30:00.000Z",
        }
        if status == "completed":
            event.update(
                duration=str(duration),
                rate="0.01000000",
                price=f"{duration / 6000:.8f}",
                network="310260",
                start_time="2026-01-05T09:30:00.000Z",
                end_time="2026-01-05T09:32:05.000Z",
            )
        return Webhook(body=json.dumps(event).encode(), content_type="application/json")

    verdicts = [
        ("human", "human", False),
        ("machine", "machine", False),
        ("machine:beep_start", "machine", True),
        ("machine:beep_timeout", "machine", True),
    ]

    def detection_sent(self, wire: Wire) -> dict[str, Any]:
        (sent,) = wire.sent
        body = json.loads(sent.body)
        return {k: v for k, v in body.items() if "machine_detection" in k}

    def commands(self, wire: Wire) -> list[Any]:
        return [
            (c.request.method, c.request.url.rsplit("/", 1)[1], json.loads(c.request.body))
            for c in wire.mock.calls
        ]

    def accept_commands(self, wire: Wire, call: Call) -> None:
        self.accept_hang_up(wire, call)

    def verdict(self, call: Call, sent: str, *, leg: str = "") -> Webhook:
        status, _, sub_state = sent.partition(":")
        event = {
            "call_uuid": leg or self.call_uuid,
            "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            "status": status,
            "to": call.to_number.removeprefix("+"),
            "from": FROM.removeprefix("+"),
            "timestamp": "2026-01-05T09:30:03.000Z",
        }
        if sub_state:
            event["sub_state"] = sub_state
        return Webhook(body=json.dumps(event).encode(), content_type="application/json")

    def answer_request(self, call: Call) -> Webhook:
        body = {
            "to": call.to_number.removeprefix("+"),
            "from": FROM.removeprefix("+"),
            "uuid": self.call_uuid,
            "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
        }
        return Webhook(body=json.dumps(body).encode(), content_type="application/json")

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        secret = "not-the-signature-secret-0123456789" if forged else VONAGE_SIGNATURE_SECRET
        claims = {
            "iat": int(time.time()) - age,
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(webhook.body).hexdigest(),
            "api_key": "abcd1234",
            "application_id": VONAGE_APPLICATION_ID,
        }
        return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}

    def rekey(self, account: ProviderAccount) -> None:
        account.secrets = {
            **account.secrets,
            "signature_secret": "another-signature-secret-0123456789abcdef",
        }

    def handed_over(self, content_type: str, body: bytes) -> tuple[str, dict[str, str]]:
        assert content_type == "application/json"
        (connect,) = json.loads(body)
        (endpoint,) = connect["endpoint"]
        assert (connect["action"], endpoint["type"], endpoint["content-type"]) == (
            "connect",
            "websocket",
            "audio/l16;rate=16000",
        )
        return endpoint["uri"], endpoint["headers"]


# --- BYO SIP trunk: the web side asks a SIP agent over its loopback control channel ----------

SIP_AGENT = "127.0.0.1:25078"
SIP_SECRET = "conformance-sip-agent-secret"


class SipDriver(Driver):
    """The agent's control channel is the wire: a real ControlServer with scripted answers (the
    real agent with PJSIP and SIPp is exercised in test_sip_calls.py). Events arrive the way the
    agent delivers them, through its reporter, not as webhooks."""

    name = "sip"
    keeps_a_record_of_the_end = False
    sends_webhooks = False
    # No answering-machine detection: the agent does not guess from audio. It transfers by
    # REFER (the engine's side, with SIPp, in test_sip_transfer.py).
    detects_machines = False
    can_transfer = True
    reports_other_legs = False
    timeline = ["ringing", "in-progress", "completed"]
    sip_call_id = "3c26e1f0a9b84d7e@burki-sip-agent"

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.dialled: dict[str, Any] = {}

    def number(self, tenant: Tenant) -> PhoneNumber:
        SipTrunk.objects.create(
            organization=tenant.organization, name="Carrier", gateway="sip.carrier.test"
        )
        return PhoneNumberFactory(organization=tenant.organization, number=FROM, provider="sip")

    @contextmanager
    def wire(self) -> Iterator[Wire]:
        self.answers = []
        wire = Wire(mock=None)

        def handle(payload: dict[str, Any]) -> dict[str, Any]:
            wire.sent.append(payload)
            self.dialled = payload
            answer = self.answers.pop(0)
            if answer == "hang":
                time.sleep(1.0)  # past SIP_AGENT_TIMEOUT_SECONDS: the web side gives up
                return {"ok": True, "call_sid": "too-late"}
            return answer

        server = sip_control.ControlServer(SIP_AGENT, handle, SIP_SECRET)
        server.start()
        wire.mock = server
        settings = {
            "SIP_AGENTS": [SIP_AGENT],
            "SIP_AGENT_SECRET": SIP_SECRET,
            "SIP_AGENT_TIMEOUT_SECONDS": 0.3,
        }
        try:
            with override_settings(**settings):
                yield wire
        finally:
            server.shutdown()
            server.server_close()

    def accept(self, wire: Wire) -> str:
        self.answers.append({"ok": True, "call_sid": self.sip_call_id})
        return self.sip_call_id

    def accept_hang_up(self, wire: Wire, call: Call) -> None:
        self.answers.append({"ok": True})

    def accept_commands(self, wire: Wire, call: Call) -> None:
        self.accept_hang_up(wire, call)

    def commands(self, wire: Wire) -> list[Any]:
        return [payload for payload in wire.sent if payload.get("op") != "dial"]

    def hung_up(self, wire: Wire) -> Any:
        return wire.sent[-1]

    def fail(self, wire: Wire, kind: str) -> tuple[str, Failure]:
        if kind == "4xx":
            detail = "No SIP trunk took the call (Carrier: Unknown host)."
            self.answers.append({"ok": False, "error": "refused", "detail": detail})
            return TO, Failure(502, {"detail": detail})
        if kind == "5xx":
            self.answers.append({"ok": False, "error": "full", "detail": "This agent is full."})
            detail = (
                "Every SIP agent is carrying all the calls it can (4 per engine process); "
                "try again shortly."
            )
            return TO, Failure(503, {"detail": detail})
        if kind == "timeout":
            self.answers.append("hang")
            error = "The SIP agent did not answer in time; it may have placed the call."
            return TO, Failure(504, TIMED_OUT, error=error)
        wire.mock.shutdown()  # refused: no agent listens
        wire.mock.server_close()
        detail = "No SIP agent is running to place the call."
        return TO, Failure(503, {"detail": detail}, attempts=0)

    def assert_placed(self, wire: Wire, call: Call) -> None:
        (sent,) = wire.sent
        assert sent == {
            "op": "dial",
            "call_id": str(call.pk),
            "from_number": FROM,
            "to_number": call.to_number,
            "time_limit_seconds": call.time_limit_seconds,
            "ring_timeout_seconds": 30,
            "media": {"stream_url": MEDIA_STREAM_URL, "parameters": context_of(call)},
        }

    def event(self, call: Call, state: str, *, duration: int = 0, leg: str = "") -> Webhook:
        body = {"state": state, "sip_call_id": leg or self.sip_call_id, "duration": duration}
        return Webhook(body=json.dumps(body).encode(), content_type="application/json")

    def lifecycle(self, call: Call) -> list[Webhook]:
        # The agent reports from the first 180 on; "initiated" is the dial's own answer.
        return [self.event(call, state) for state in ("ringing", "in-progress")]

    def report(self, client, call: Call, webhook: Webhook) -> tuple[int, Any]:
        data = json.loads(webhook.body)
        event = StatusEvent(
            state=data["state"],
            provider_call_id=data["sip_call_id"],
            duration_seconds=data["duration"] if data["state"] == "completed" else None,
            reason="callee hung up (BYE)" if data["state"] == "completed" else "",
            raw={"sip_call_id": data["sip_call_id"], "trunk": "Carrier"},
        )
        return 200, {"detail": sip_report(str(call.pk), event).sentence}

    def hand_over(self, client, call: Call) -> tuple[str, dict[str, str]]:
        # What the agent is handed for the answered call: the stream and its parameters.
        media = self.dialled["media"]
        return media["stream_url"], media["parameters"]

    def sign(
        self, url: str, webhook: Webhook, *, forged: bool = False, age: int = 0
    ) -> dict[str, str]:
        return {"Authorization": "Bearer forged"} if forged else {}


DRIVERS: list[Driver] = [
    SandboxDriver(),
    TwilioDriver(),
    TelnyxDriver(),
    VonageDriver(),
    SipDriver(),
]


def drivers(*, where: str | None = None, unless: str | None = None) -> list[Any]:
    chosen = [
        d
        for d in DRIVERS
        if (where is None or getattr(d, where)) and (unless is None or not getattr(d, unless))
    ]
    return [pytest.param(d, id=d.name) for d in chosen]


def context_of(call: Call) -> dict[str, str]:
    return {
        "call_id": str(call.pk),
        "assistant_id": str(call.assistant_id),
        "welcome_message": call.welcome_message,
        "agenda": call.agenda,
    }


def initiate(tenant: Tenant, **body: Any):
    return tenant.client.post(
        "/calls/initiate",
        {"from_phone_number": FROM, "to_phone_number": TO, **body},
        format="json",
    )


def send(client, path: str, webhook: Webhook, headers: dict[str, str]):
    return client.post(path, webhook.body, content_type=webhook.content_type, headers=headers)


def signed(client, driver: Driver, path: str, webhook: Webhook):
    return send(client, path, webhook, driver.sign(PUBLIC_BASE + path, webhook))


@pytest.fixture(params=drivers(where="plays_out_calls"))
def driver(request) -> Driver:
    return request.param


@pytest.fixture
def placed(tenant: Tenant, driver: Driver) -> Call:
    """A call the provider accepted, with a welcome message and agenda of its own."""
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        response = initiate(
            tenant,
            welcome_message="Hello {{name}}",
            agenda="Remind {{name}} about the dental appointment.",
            variables={"name": "Jo"},
        )
    assert response.status_code == 200, response.json()
    return Call.objects.get(pk=response.json()["call_id"])


def settle_on_the_record(
    driver: Driver, call: Call, *, talked: int = 0, state: str = "completed"
) -> None:
    """What the worker does after an end reported by a webhook the account could have signed
    itself: settle the call on the provider's own record (here saying `state`, `talked` s)."""
    if not driver.account_can_forge_webhooks:
        return
    call.refresh_from_db()
    assert call.cost_cents is None  # held until the record says how it ended
    with driver.wire() as wire:
        driver.keep_record(wire, call, talked=talked, state=state)
        assert call_settle_from_record(call_id=call.pk)


def assert_unchanged(call: Call, tenant: Tenant) -> None:
    before = (call.status, call.cost_cents, call.duration_seconds)
    call.refresh_from_db()
    assert (call.status, call.cost_cents, call.duration_seconds) == before
    assert CallEvent.objects.filter(call=call).count() == 0
    assert list(
        LedgerEntry.objects.filter(organization=tenant.organization)
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["top_up", "hold"]
    assert_money_consistent(tenant.organization)


# --- what the provider says it can do --------------------------------------------------------


@pytest.mark.parametrize("driver", drivers())
def test_a_provider_says_what_its_driver_expects_it_to_do(driver: Driver) -> None:
    provider = get_provider(driver.name)

    assert {
        "sends_webhooks": provider.sends_webhooks,
        "can_find_calls": provider.can_find_calls,
        "can_fetch_calls": provider.can_fetch_calls,
        "account_can_forge_webhooks": provider.account_can_forge_webhooks,
        "can_detect_machines": provider.can_detect_machines,
        "can_transfer": provider.can_transfer,
        # A simulated call dials nobody, and nothing reaches us from outside about it.
        "dials_over_the_wire": not provider.simulates_calls,
        "plays_out_calls": not provider.simulates_calls,
    } == {
        "sends_webhooks": driver.sends_webhooks,
        "can_find_calls": driver.can_find_calls,
        "can_fetch_calls": driver.can_fetch_calls,
        "account_can_forge_webhooks": driver.account_can_forge_webhooks,
        "can_detect_machines": driver.detects_machines,
        "can_transfer": driver.can_transfer,
        "dials_over_the_wire": driver.dials_over_the_wire,
        "plays_out_calls": driver.plays_out_calls,
    }


# --- placing the call ------------------------------------------------------------------------


@pytest.mark.parametrize("driver", drivers(where="dials_over_the_wire"))
def test_placing_a_call_sends_our_call_id_time_limit_and_callbacks(
    tenant: Tenant, driver: Driver
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        call_sid = driver.accept(wire)
        response = initiate(tenant, welcome_message="Hi {{name}}", variables={"name": "Ann"})

    assert response.status_code == 200
    call = Call.objects.get()
    assert response.json() == {
        "message": "Call initiated successfully",
        "call_sid": call_sid,
        "call_id": str(call.pk),
    }
    assert (call.status, call.call_sid, call.provider) == ("initiated", call_sid, driver.name)
    assert (call.time_limit_seconds, call.hold_cents) == (600, 100)
    driver.assert_placed(wire, call)
    assert_money_consistent(tenant.organization)


# A time-out is no failure: the provider may have placed the call (see the time-out case below).
FAILURES = [
    pytest.param(d, kind, id=f"{d.name}-{kind}")
    for d in DRIVERS
    for kind in d.failures
    if kind != "timeout"
]


@pytest.mark.parametrize(("driver", "kind"), FAILURES)
def test_a_provider_failure_fails_the_call_and_releases_the_hold(
    tenant: Tenant, driver: Driver, kind: str
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        to_number, expected = driver.fail(wire, kind)
        response = initiate(tenant, to_phone_number=to_number)

    assert (response.status_code, response.json()) == (expected.status, expected.body)
    assert len(wire.sent) == (expected.attempts if driver.dials_over_the_wire else 0)
    if expected.attempts > 1:  # a retry is the same request, so the provider can tell
        assert len({r.content for r in wire.sent}) == 1
    call = Call.objects.get()
    assert (call.status, call.call_sid, call.cost_cents) == ("failed", "", 0)
    assert call.error == expected.recorded
    assert call.ended_at is not None
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000, 0)
    assert list(
        LedgerEntry.objects.filter(organization=tenant.organization)
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["top_up", "hold", "release"]
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("driver", [d for d in drivers() if "timeout" in d.values[0].failures])
def test_a_time_out_keeps_the_call_and_its_hold_until_the_provider_tells(
    client, tenant: Tenant, driver: Driver
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        to_number, expected = driver.fail(wire, "timeout")
        response = initiate(tenant, to_phone_number=to_number)

    call = Call.objects.get()
    assert (response.status_code, response.json()) == (
        504,
        {**expected.body, "call_id": str(call.pk)},
    )
    assert (call.status, call.call_sid, call.cost_cents) == ("unknown", "", None)
    assert call.error == expected.recorded
    assert list(
        LedgerEntry.objects.filter(organization=tenant.organization)
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["top_up", "hold"]
    assert_money_consistent(tenant.organization)

    if driver.plays_out_calls:
        # It was placed after all: its own events (our call id is in their URL) adopt it, and
        # the money settles on them as on any call.
        for webhook in driver.lifecycle(call):
            assert driver.report(client, call, webhook)[0] == 200
        completed = driver.event(call, "completed", duration=125)
        assert driver.report(client, call, completed) == (200, {"detail": "Applied."})
        settle_on_the_record(driver, call, talked=125)
        call.refresh_from_db()
        assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 125, 21)
        assert call.call_sid != ""
    else:
        # Only a provider that says it placed nothing releases the money.
        Call.objects.filter(pk=call.pk).update(created_at=timezone.now() - timedelta(minutes=5))
        assert call_reconcile_stale().failed == 1
        call.refresh_from_db()
        assert (call.status, call.cost_cents) == ("failed", 0)
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("driver", drivers(unless="can_find_calls"))
def test_a_call_left_queued_fails_unverified_when_the_provider_cannot_be_asked(
    tenant: Tenant, driver: Driver
) -> None:
    driver.number(tenant)
    provider = get_provider(driver.name)
    with driver.wire() as wire:
        with (
            mock.patch.object(type(provider), "place_call", side_effect=SystemExit(1)),
            pytest.raises(SystemExit),
        ):
            initiate(tenant)  # the worker died before the provider answered
        report = call_reconcile_stale(grace_seconds=0)

    assert report == ReconcileReport(failed=1)
    assert wire.sent == []
    call = Call.objects.get()
    assert (call.status, call.call_sid, call.cost_cents) == ("failed", "", 0)
    assert call.error == (
        f"The request stopped before {provider.label} answered, and {provider.label} cannot be "
        "asked whether it placed the call (not verified)."
    )
    assert list(
        LedgerEntry.objects.filter(organization=tenant.organization)
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["top_up", "hold", "release"]
    assert_money_consistent(tenant.organization)


# --- the answered call -----------------------------------------------------------------------


def test_the_answer_webhook_hands_the_call_to_the_right_assistant(
    client, tenant: Tenant, driver: Driver
) -> None:
    driver.number(tenant)
    chosen = AssistantFactory(organization=tenant.organization)
    with driver.wire() as wire:
        driver.accept(wire)
        placed = initiate(
            tenant,
            assistant_id=chosen.pk,
            welcome_message="Hi {{name}}, it is {{company}}.",
            agenda="Confirm {{name}}'s order.",
            variables={"name": "Ann", "company": "Acme"},
        )
    call = Call.objects.get(pk=placed.json()["call_id"])

    assert driver.hand_over(client, call) == (
        MEDIA_STREAM_URL,
        {
            "call_id": str(call.pk),
            "assistant_id": str(chosen.pk),
            "welcome_message": "Hi Ann, it is Acme.",
            "agenda": "Confirm Ann's order.",
        },
    )


def test_the_full_lifecycle_settles_the_exact_cost_once(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    for webhook in driver.lifecycle(placed):
        assert driver.report(client, placed, webhook)[0] == 200
    completed = driver.event(placed, "completed", duration=125)

    first = driver.report(client, placed, completed)
    again = driver.report(client, placed, completed)
    late = driver.report(client, placed, driver.event(placed, "in-progress"))

    assert first == (200, {"detail": "Applied."})
    assert again == (200, {"detail": "Ignored: already applied."})
    assert late == (200, {"detail": "Ignored: already applied."})
    settle_on_the_record(driver, placed, talked=125)
    placed.refresh_from_db()
    # 125 s at 10 cents a minute = 20.83 cents, rounded up.
    assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 125, 21)
    assert placed.answered_at is not None and placed.ended_at is not None
    assert list(CallEvent.objects.filter(call=placed).values_list("status", flat=True)) == (
        driver.timeline
    )
    entries = LedgerEntry.objects.filter(call_id=placed.pk).order_by("id")
    assert [(e.kind, e.amount_cents, e.held_change_cents) for e in entries] == [
        ("hold", 0, 100),
        ("charge", -21, -21),
        ("release", 0, -79),
    ]
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000 - 21, 0)
    assert_money_consistent(tenant.organization)


HUNG_UP = {
    "twilio": lambda call: ("POST", f"{call.call_sid}.json", {"Status": ["completed"]}),
    "telnyx": lambda call: (
        "POST",
        f"/v2/calls/{call.call_sid}/actions/hangup",
        {"command_id": f"hangup-{call.pk}"},
    ),
    "vonage": lambda call: ("PUT", call.call_sid, {"action": "hangup"}),
    "sip": lambda call: {"op": "hangup", "call_id": str(call.pk)},
    "sandbox": lambda call: None,
}


@pytest.mark.parametrize("driver", drivers())
def test_hanging_up_a_talking_call_ends_it_through_its_provider_and_settles_once(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    if driver.plays_out_calls:
        for webhook in driver.lifecycle(placed):
            assert driver.report(client, placed, webhook)[0] == 200
    else:
        for step in (0, 1):  # rings, is answered
            call_play_simulated(call_id=placed.pk, step=step)
    placed.refresh_from_db()
    assert placed.status == "in-progress"

    with driver.wire() as wire:
        driver.accept_hang_up(wire, placed)
        response = tenant.client.post(f"/calls/{placed.pk}/hangup")
        asked = driver.hung_up(wire)
    assert response.status_code == 200, response.json()
    assert response.json()["call_id"] == str(placed.pk)
    assert asked == HUNG_UP[driver.name](placed)

    if driver.plays_out_calls:  # the provider reports the end, as for any call
        ended = driver.event(placed, "completed", duration=30)
        assert driver.report(client, placed, ended) == (200, {"detail": "Applied."})
        settle_on_the_record(driver, placed, talked=30)
    placed.refresh_from_db()
    assert placed.status == "completed"
    assert placed.cost_cents is not None
    with driver.wire() as wire:
        again = tenant.client.post(f"/calls/{placed.pk}/hangup")  # asks no one
    assert again.status_code == 200
    assert again.json()["status"] == "completed"
    assert LedgerEntry.objects.filter(call_id=placed.pk, kind="release").count() == 1
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("driver", drivers())
def test_another_organizations_call_cannot_be_hung_up(
    tenant: Tenant, outsider: Tenant, driver: Driver, placed: Call
) -> None:
    with driver.wire() as wire:
        response = outsider.client.post(f"/calls/{placed.pk}/hangup")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
    assert wire.sent == [] or not driver.dials_over_the_wire
    placed.refresh_from_db()
    assert placed.status == "initiated"


@pytest.mark.parametrize("driver", drivers(where="sends_webhooks"))
def test_the_answer_webhook_of_a_call_that_is_over_hands_nothing_to_the_assistant(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    for webhook in driver.lifecycle(placed):
        driver.report(client, placed, webhook)
    assert driver.report(client, placed, driver.event(placed, "completed", duration=5))[0] == 200

    path = f"/webhooks/calls/{placed.pk}/answer"
    response = signed(client, driver, path, driver.answer_request(placed))

    hang_up = get_provider(driver.name).answer_with_hangup()
    assert response.status_code == 200
    assert (response["Content-Type"], response.content.decode()) == (
        hang_up.content_type,
        hang_up.body,
    )
    assert MEDIA_STREAM_URL not in response.content.decode()


@pytest.mark.parametrize("driver", drivers(where="keeps_a_record_of_the_end"))
def test_a_call_whose_end_never_reached_us_is_settled_from_the_providers_record(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    for webhook in driver.lifecycle(placed):  # up to the answer; the end is lost
        assert driver.report(client, placed, webhook)[0] == 200
    Call.objects.filter(pk=placed.pk).update(live_until=timezone.now() - timedelta(minutes=5))
    placed.refresh_from_db()
    assert placed.status == "in-progress"

    with driver.wire() as wire:
        driver.keep_record(wire, placed, talked=125)
        report = calls_sweep()

    assert (report.settled, report.left) == (1, 0)
    placed.refresh_from_db()
    assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 125, 21)
    assert placed.settled_by == "provider"
    assert CallEvent.objects.filter(call=placed).last().source == "sweep"
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("driver", drivers(where="account_can_forge_webhooks"))
def test_an_end_signed_with_the_accounts_own_secret_does_not_set_the_bill(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    """The organization holds the secret its provider signs webhooks with, so it can sign
    "completed, 0 s" itself. The call is settled on the provider's record, and held (counting
    against the cap) until that record says the call is over."""
    for webhook in driver.lifecycle(placed):
        assert driver.report(client, placed, webhook)[0] == 200
    forged = driver.event(placed, "completed", duration=0)
    assert driver.report(client, placed, forged) == (200, {"detail": "Applied."})
    with driver.wire() as wire:  # the provider says the call is still talking
        driver.keep_record(wire, placed, talked=0, state="in-progress")
        assert not call_settle_from_record(call_id=placed.pk)
    placed.refresh_from_db()
    assert placed.cost_cents is None
    assert calls_in_progress(organization_id=tenant.organization.pk, up_to=10) == 1

    settle_on_the_record(driver, placed, talked=600)  # then it ends, ten minutes in

    placed.refresh_from_db()
    assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 600, 100)
    assert placed.settled_by == "provider"
    assert calls_in_progress(organization_id=tenant.organization.pk, up_to=10) == 0
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("outcome", ["busy", "no-answer"])
def test_a_call_that_never_connects_costs_nothing(
    client, tenant: Tenant, driver: Driver, placed: Call, outcome: str
) -> None:
    response = driver.report(client, placed, driver.event(placed, outcome))

    assert response == (200, {"detail": "Applied."})
    settle_on_the_record(driver, placed, talked=0, state=outcome)
    placed.refresh_from_db()
    assert (placed.status, placed.cost_cents) == (outcome, 0)
    balance = Balance.objects.get(organization=tenant.organization)
    assert (balance.balance_cents, balance.held_cents) == (10_000, 0)
    assert_money_consistent(tenant.organization)


# --- webhooks that do not check out ----------------------------------------------------------

REJECTIONS = [
    pytest.param(d, how, id=f"{d.name}-{how}")
    for d in DRIVERS
    for how in ("unsigned", "forged", "tampered", "stale")
    if (d.sends_webhooks or how in ("unsigned", "forged"))
    and (d.signs_a_timestamp or how != "stale")
]


@pytest.mark.parametrize(("driver", "how"), REJECTIONS)
@pytest.mark.parametrize("hook", ["answer", "status"])
def test_a_webhook_that_does_not_check_out_is_a_403_and_changes_nothing(
    client, tenant: Tenant, driver: Driver, how: str, hook: str
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        call = Call.objects.get(pk=initiate(tenant).json()["call_id"])
    path = f"/webhooks/calls/{call.pk}/{hook}"
    url = PUBLIC_BASE + path
    webhook = driver.event(call, "completed", duration=125)
    headers = {
        "unsigned": lambda: {},
        "forged": lambda: driver.sign(url, webhook, forged=True),
        "tampered": lambda: driver.sign(url, driver.event(call, "completed", duration=1)),
        "stale": lambda: driver.sign(url, webhook, age=600),
    }[how]()

    response = send(client, path, webhook, headers)

    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Invalid webhook signature."},
    )
    assert_unchanged(call, tenant)


@pytest.mark.parametrize("driver", drivers(where="sends_webhooks"))
def test_a_webhook_signed_with_another_accounts_keys_is_a_403(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    account = placed.provider_account
    driver.rekey(account)
    account.save()
    path = f"/webhooks/calls/{placed.pk}/status"

    response = signed(client, driver, path, driver.event(placed, "completed", duration=60))

    assert response.status_code == 403
    assert_unchanged(placed, tenant)


@pytest.mark.parametrize("driver", drivers())
def test_a_status_for_an_unknown_call_is_acknowledged_and_ignored(
    client, db, driver: Driver
) -> None:
    path = f"/webhooks/calls/{uuid.uuid4()}/status"
    webhook = driver.event(Call(to_number=TO), "completed", duration=60)

    response = send(client, path, webhook, driver.sign(PUBLIC_BASE + path, webhook))

    assert (response.status_code, response.json()) == (200, {"detail": "Ignored: unknown call."})
    assert Call.objects.count() == 0 and CallEvent.objects.count() == 0


@pytest.mark.parametrize("driver", drivers(where="reports_other_legs"))
def test_an_event_for_another_leg_changes_nothing(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    # e.g. the websocket leg an NCCO connect creates: its hang-up is not the call's.
    response = driver.report(client, placed, driver.event(placed, "busy", leg="another-leg-0123"))

    assert response == (200, {"detail": "Ignored: an event for another leg of the call."})
    assert_unchanged(placed, tenant)


# --- the seed's request examples, from every provider ----------------------------------------

SEED_EXAMPLES = {
    "basic": {},
    "variables": {
        "welcome_message": "Hello {{name}}, this is a reminder about your appointment "
        "tomorrow at {{time}}.",
        "agenda": "Remind {{name}} about their upcoming {{appointment_type}} appointment.",
        "variables": {"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
    },
    "override": {
        "assistant_id": 456,
        "welcome_message": "Hi there! I'm calling about your recent inquiry.",
    },
}


def assistant_456(tenant: Tenant) -> None:
    """The seed's override example names assistant 456: make it, and keep the id sequence past
    it so no later assistant is handed the same id."""
    AssistantFactory(pk=456, organization=tenant.organization)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('assistants_assistant', 'id'), "
            "GREATEST(nextval(pg_get_serial_sequence('assistants_assistant', 'id')), 456))"
        )


@pytest.mark.parametrize("example", list(SEED_EXAMPLES))
@pytest.mark.parametrize("driver", drivers(where="dials_over_the_wire"))
def test_the_seed_examples_succeed_from_every_provider(
    client, tenant: Tenant, driver: Driver, example: str
) -> None:
    number = driver.number(tenant)
    assistant_456(tenant)
    with driver.wire() as wire:
        call_sid = driver.accept(wire)
        response = initiate(tenant, **SEED_EXAMPLES[example])

    assert response.status_code == 200
    call = Call.objects.get()
    assert response.json() == {
        "message": "Call initiated successfully",
        "call_sid": call_sid,
        "call_id": str(call.pk),
    }
    driver.assert_placed(wire, call)
    expected = {
        "basic": (number.assistant_id, number.assistant.welcome_message, ""),
        "variables": (
            number.assistant_id,
            "Hello John Doe, this is a reminder about your appointment tomorrow at 10 AM.",
            "Remind John Doe about their upcoming dental appointment.",
        ),
        "override": (456, "Hi there! I'm calling about your recent inquiry.", ""),
    }[example]
    assert driver.hand_over(client, call) == (
        MEDIA_STREAM_URL,
        {
            "call_id": str(call.pk),
            "assistant_id": str(expected[0]),
            "welcome_message": expected[1],
            "agenda": expected[2],
        },
    )


def test_status_webhooks_cost_a_fixed_number_of_queries(
    client, driver: Driver, placed: Call, django_assert_num_queries
) -> None:
    # The same budget as Twilio's (tests/test_query_budget.py lists each query).
    with django_assert_num_queries(STATUS):
        answered = driver.report(client, placed, driver.event(placed, "in-progress"))
    # Settled on the spot, or held for the provider's record (then settled in as many again).
    final = FINAL_STATUS_HELD if driver.account_can_forge_webhooks else FINAL_STATUS
    with django_assert_num_queries(final):
        ended = driver.report(client, placed, driver.event(placed, "completed", duration=30))

    assert answered == ended == (200, {"detail": "Applied."})


# --- answering-machine detection -------------------------------------------------------------

MESSAGE = "Hi {{name}}, this is Acme Dental. Please call us back."
SPOKEN = "Hi Jo, this is Acme Dental. Please call us back."


def chosen(*flags: str) -> list[Any]:
    return [pytest.param(d, id=d.name) for d in DRIVERS if all(getattr(d, f) for f in flags)]


def voicemail(on_machine: str) -> dict[str, str]:
    message = {"message": MESSAGE} if on_machine == "leave_message" else {}
    return {"on_machine": on_machine, **message}


def answered_detecting(client, tenant: Tenant, driver: Driver, on_machine: str) -> Call:
    """A call placed with machine detection, answered (its lifecycle reported)."""
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        response = initiate(tenant, variables={"name": "Jo"}, voicemail=voicemail(on_machine))
    assert response.status_code == 200, response.json()
    call = Call.objects.get(pk=response.json()["call_id"])
    for webhook in driver.lifecycle(call):
        assert driver.report(client, call, webhook)[0] == 200
    call.refresh_from_db()
    assert call.status == "in-progress"
    return call


def first_verdict(driver: Driver, answered_by: str, *, greeting_ended: bool) -> str:
    return next(
        sent for sent, by, ended in driver.verdicts if (by, ended) == (answered_by, greeting_ended)
    )


DETECTION_ON_THE_WIRE = {
    "twilio": lambda call, on_machine: {
        "MachineDetection": ["DetectMessageEnd" if on_machine == "leave_message" else "Enable"],
        "AsyncAmd": ["true"],
        "AsyncAmdStatusCallback": [f"{PUBLIC_BASE}/webhooks/calls/{call.pk}/status"],
        "AsyncAmdStatusCallbackMethod": ["POST"],
    },
    "telnyx": lambda call, on_machine: {
        "answering_machine_detection": (
            "greeting_end" if on_machine == "leave_message" else "detect"
        )
    },
    "vonage": lambda call, on_machine: {
        "advanced_machine_detection": {
            "behavior": "continue",
            "mode": "default",
            **({"beep_timeout": 45} if on_machine == "leave_message" else {}),
        }
    },
}


@pytest.mark.parametrize("on_machine", ["hangup", "leave_message", "continue"])
@pytest.mark.parametrize("driver", chosen("detects_machines", "dials_over_the_wire"))
def test_detection_is_asked_of_the_providers_own_detection_without_keeping_anyone_waiting(
    tenant: Tenant, driver: Driver, on_machine: str
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        response = initiate(tenant, variables={"name": "Jo"}, voicemail=voicemail(on_machine))

    assert response.status_code == 200, response.json()
    call = Call.objects.get()
    assert driver.detection_sent(wire) == DETECTION_ON_THE_WIRE[driver.name](call, on_machine)
    spoken = SPOKEN if on_machine == "leave_message" else ""
    assert call.voicemail == {"on_machine": on_machine, "message": spoken}
    assert (call.status, call.answered_by) == ("initiated", None)


@pytest.mark.parametrize("driver", chosen("dials_over_the_wire"))
def test_a_call_that_does_not_ask_sends_no_detection(tenant: Tenant, driver: Driver) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        # detect: false is the same as no voicemail at all.
        response = initiate(tenant, voicemail={"detect": False, "on_machine": "hangup"})

    assert response.status_code == 200, response.json()
    call = Call.objects.get()
    driver.assert_placed(wire, call)  # exactly the plain dial, nothing more
    assert (call.voicemail, call.answered_by) == (None, None)


@pytest.mark.parametrize("driver", drivers(unless="detects_machines"))
def test_a_provider_without_machine_detection_refuses_voicemail_and_dials_nothing(
    tenant: Tenant, driver: Driver
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        response = initiate(tenant, voicemail={"on_machine": "hangup"})

    provider = get_provider(driver.name)
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": f"{provider.label} numbers cannot detect answering machines: leave "
            "voicemail out, or call from a Twilio, Telnyx, Vonage or sandbox number."
        },
    )
    assert wire.sent == []
    assert Call.objects.count() == 0
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["top_up"]
    assert_money_consistent(tenant.organization)


VERDICTS = [
    pytest.param(d, sent, by, ended, id=f"{d.name}-{sent}")
    for d in DRIVERS
    if d.detects_machines and d.plays_out_calls
    for sent, by, ended in d.verdicts
]


@pytest.mark.parametrize(("driver", "sent", "answered_by", "greeting_ended"), VERDICTS)
def test_each_verdict_lands_on_the_call_as_answered_by_once(
    client, tenant: Tenant, driver: Driver, sent: str, answered_by: str, greeting_ended: bool
) -> None:
    call = answered_detecting(client, tenant, driver, "continue")
    webhook = driver.verdict(call, sent)
    parsed = get_provider(driver.name).parse_detection(
        WebhookRequest(
            url="", method="POST", headers={}, body=webhook.body, form=webhook.form or {}
        )
    )
    assert parsed is not None
    assert (parsed.answered_by, parsed.greeting_ended) == (answered_by, greeting_ended)

    with driver.wire() as wire:
        first = driver.report(client, call, webhook)
        again = driver.report(client, call, webhook)

    keeps = "Applied: the assistant keeps the call"
    if answered_by in ("machine", "fax"):
        keeps += " (on_machine: continue)"
    assert first == (200, {"detail": f"{keeps}."})
    assert again == (200, {"detail": "Ignored: already applied."})
    assert wire.sent == []  # "continue": nothing is asked of the provider
    call.refresh_from_db()
    assert (call.status, call.answered_by, call.end_reason) == ("in-progress", answered_by, "")
    event = CallEvent.objects.filter(call=call).last()
    assert (event.status, event.source) == ("in-progress", driver.name)
    assert event.detail["answered_by"] == answered_by
    told = WebhookEvent.objects.filter(subject_id=call.pk, type="call.answered_by")
    assert [e.data["answered_by"] for e in told] == [answered_by]


@pytest.mark.parametrize("driver", chosen("detects_machines", "plays_out_calls"))
def test_a_verdict_for_another_leg_or_signed_by_someone_else_changes_nothing(
    client, tenant: Tenant, driver: Driver
) -> None:
    call = answered_detecting(client, tenant, driver, "hangup")
    machine = first_verdict(driver, "machine", greeting_ended=False)
    path = f"/webhooks/calls/{call.pk}/status"
    webhook = driver.verdict(call, machine)

    with driver.wire() as wire:
        other_leg = driver.report(client, call, driver.verdict(call, machine, leg="leg-0999"))
        forged = send(client, path, webhook, driver.sign(PUBLIC_BASE + path, webhook, forged=True))

    assert other_leg == (200, {"detail": "Ignored: an event for another leg of the call."})
    assert (forged.status_code, forged.json()) == (403, {"detail": "Invalid webhook signature."})
    assert wire.sent == []
    call.refresh_from_db()
    assert (call.answered_by, call.end_reason, call.status) == (None, "", "in-progress")
    assert not WebhookEvent.objects.filter(type="call.answered_by").exists()


@pytest.mark.parametrize("driver", chosen("detects_machines", "plays_out_calls"))
def test_a_machine_is_hung_up_on_at_once_and_charged_only_the_seconds_used(
    client, tenant: Tenant, driver: Driver
) -> None:
    call = answered_detecting(client, tenant, driver, "hangup")
    machine = first_verdict(driver, "machine", greeting_ended=False)

    with driver.wire() as wire:
        driver.accept_commands(wire, call)
        response = driver.report(client, call, driver.verdict(call, machine))
        asked = driver.commands(wire)
        again = driver.report(client, call, driver.verdict(call, machine))
        asked_again = driver.commands(wire)

    assert response == (200, {"detail": "Applied: hanging up on the machine."})
    assert asked == [HUNG_UP[driver.name](call)]
    assert again == (200, {"detail": "Ignored: already applied."})
    assert asked_again == asked  # asked once
    call.refresh_from_db()
    assert (call.status, call.answered_by) == ("in-progress", "machine")
    ended = driver.event(call, "completed", duration=3)
    assert driver.report(client, call, ended) == (200, {"detail": "Applied."})
    settle_on_the_record(driver, call, talked=3)
    call.refresh_from_db()
    assert (call.status, call.duration_seconds, call.cost_cents) == ("completed", 3, 1)
    assert call.end_reason == "Answered by a machine: hung up on detection."
    assert_money_consistent(tenant.organization)


# Vonage's detection never says fax (a fax is a machine to it).
@pytest.mark.parametrize(
    "driver",
    [
        d
        for d in chosen("detects_machines", "plays_out_calls")
        if "fax" in str(d.values[0].verdicts)
    ],
)
def test_a_fax_is_hung_up_on_even_when_a_message_was_to_be_left(
    client, tenant: Tenant, driver: Driver
) -> None:
    fax = [sent for sent, by, _ in driver.verdicts if by == "fax"]
    call = answered_detecting(client, tenant, driver, "leave_message")

    with driver.wire() as wire:
        driver.accept_commands(wire, call)
        response = driver.report(client, call, driver.verdict(call, fax[0]))
        asked = driver.commands(wire)

    assert response == (200, {"detail": "Applied: hanging up on the fax machine."})
    assert asked == [HUNG_UP[driver.name](call)]
    call.refresh_from_db()
    assert (call.answered_by, call.end_reason) == (
        "fax",
        "Answered by a fax machine: hung up on detection.",
    )


LEFT_MESSAGE = {
    "twilio": lambda call: [
        (
            "POST",
            f"{call.call_sid}.json",
            {
                "Twiml": [
                    '<?xml version="1.0" encoding="UTF-8"?><Response>'
                    f"<Say>{SPOKEN}</Say><Hangup /></Response>"
                ]
            },
        )
    ],
    "telnyx": lambda call: [
        ("POST", f"/v2/calls/{call.call_sid}/actions/streaming_stop", {}),
        (
            "POST",
            f"/v2/calls/{call.call_sid}/actions/speak",
            {
                "payload": SPOKEN,
                "voice": "AWS.Polly.Joanna-Neural",
                "command_id": f"voicemail-{call.pk}",
            },
        ),
    ],
    "vonage": lambda call: [
        (
            "PUT",
            call.call_sid,
            {
                "action": "transfer",
                "destination": {"type": "ncco", "ncco": [{"text": SPOKEN, "action": "talk"}]},
            },
        )
    ],
}


@pytest.mark.parametrize("driver", chosen("detects_machines", "plays_out_calls"))
def test_a_machine_gets_the_message_after_its_beep_and_then_the_call_ends(
    client, tenant: Tenant, driver: Driver
) -> None:
    call = answered_detecting(client, tenant, driver, "leave_message")
    machine = first_verdict(driver, "machine", greeting_ended=False)
    beep = first_verdict(driver, "machine", greeting_ended=True)

    with driver.wire() as wire:
        driver.accept_commands(wire, call)
        verdict = driver.report(client, call, driver.verdict(call, machine))
        asked_at_the_verdict = driver.commands(wire)
        greeting_over = driver.report(client, call, driver.verdict(call, beep))
        asked = driver.commands(wire)
        played = driver.message_played(call)
        if played is not None:  # the provider says it was said: we end the call
            assert driver.report(client, call, played) == (
                200,
                {"detail": "Applied: the message was played: hanging up."},
            )
        asked_after = driver.commands(wire)[len(asked) :]

    assert verdict == (200, {"detail": "Applied: waiting for the end of the machine's greeting."})
    assert asked_at_the_verdict == []  # the greeting is still playing
    assert greeting_over == (200, {"detail": "Applied: the greeting ended: leaving the message."})
    assert asked == LEFT_MESSAGE[driver.name](call)
    assert asked_after == ([] if played is None else [HUNG_UP[driver.name](call)])
    ended = driver.event(call, "completed", duration=14)
    assert driver.report(client, call, ended) == (200, {"detail": "Applied."})
    settle_on_the_record(driver, call, talked=14)
    call.refresh_from_db()
    assert (call.status, call.answered_by, call.duration_seconds, call.cost_cents) == (
        "completed",
        "machine",
        14,
        3,
    )
    assert call.end_reason == (
        "Answered by a machine: the voicemail message was left after the beep."
    )
    actions = [
        e.detail["action"] for e in CallEvent.objects.filter(call=call) if "action" in e.detail
    ]
    assert actions == [
        "waiting for the end of the machine's greeting",
        "the greeting ended: leaving the message",
    ]
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("on_machine", ["hangup", "leave_message", "continue"])
@pytest.mark.parametrize("driver", chosen("detects_machines", "sends_webhooks"))
def test_the_answer_webhook_hands_a_known_machine_to_the_assistant_only_with_continue(
    client, tenant: Tenant, driver: Driver, on_machine: str
) -> None:
    driver.number(tenant)
    with driver.wire() as wire:
        driver.accept(wire)
        response = initiate(tenant, variables={"name": "Jo"}, voicemail=voicemail(on_machine))
    call = Call.objects.get(pk=response.json()["call_id"])
    Call.objects.filter(pk=call.pk).update(answered_by="machine")  # its verdict came first

    path = f"/webhooks/calls/{call.pk}/answer"
    answer = signed(client, driver, path, driver.answer_request(call))

    provider = get_provider(driver.name)
    assert answer.status_code == 200
    call.refresh_from_db()
    if on_machine == "continue":
        assert driver.handed_over(answer["Content-Type"], answer.content)[0] == MEDIA_STREAM_URL
        assert call.end_reason == ""
        return
    expected = (
        provider.answer_with_message(SPOKEN)
        if on_machine == "leave_message"
        else provider.answer_with_hangup()
    )
    assert (answer["Content-Type"], answer.content.decode()) == (
        expected.content_type,
        expected.body,
    )
    assert MEDIA_STREAM_URL not in answer.content.decode()
    assert (
        call.end_reason
        == {
            "hangup": "Answered by a machine: hung up on detection.",
            "leave_message": (
                "Answered by a machine: the voicemail message was left after the beep."
            ),
        }[on_machine]
    )
    # Asked again (a retried answer webhook), the machine is not given the message twice.
    again = signed(client, driver, path, driver.answer_request(call))
    assert again.content.decode() == provider.answer_with_hangup().body


@pytest.mark.parametrize("driver", chosen("detects_machines", "plays_out_calls"))
def test_a_verdict_costs_a_fixed_number_of_queries(
    client, tenant: Tenant, driver: Driver, django_assert_num_queries
) -> None:
    call = answered_detecting(client, tenant, driver, "continue")
    human = first_verdict(driver, "human", greeting_ended=False)

    with django_assert_num_queries(VERDICT):
        response = driver.report(client, call, driver.verdict(call, human))

    assert response[0] == 200
    call.refresh_from_db()
    assert call.answered_by == "human"


# --- transfer ----------------------------------------------------------------------------------

TRANSFER_TO = "+15557654321"

TRANSFERRED = {
    "twilio": lambda call: [
        (
            "POST",
            f"{call.call_sid}.json",
            {
                "Twiml": [
                    '<?xml version="1.0" encoding="UTF-8"?><Response>'
                    f'<Dial callerId="{FROM}" timeLimit="500"><Number>{TRANSFER_TO}</Number>'
                    "</Dial></Response>"
                ]
            },
        )
    ],
    "telnyx": lambda call: [
        ("POST", f"/v2/calls/{call.call_sid}/actions/streaming_stop", {}),
        (
            "POST",
            f"/v2/calls/{call.call_sid}/actions/transfer",
            {
                "to": TRANSFER_TO,
                "from": FROM,
                "time_limit_secs": 500,
                "command_id": mock.ANY,  # "transfer-<call id>-<when>": checked below
            },
        ),
    ],
    "vonage": lambda call: [
        (
            "PUT",
            call.call_sid,
            {
                "action": "transfer",
                "destination": {
                    "type": "ncco",
                    "ncco": [
                        {
                            "endpoint": [
                                {"number": TRANSFER_TO.removeprefix("+"), "type": "phone"}
                            ],
                            "from": FROM.removeprefix("+"),
                            "limit": 500,
                            "action": "connect",
                        }
                    ],
                },
            },
        )
    ],
    "sip": lambda call: [{"op": "transfer", "call_id": str(call.pk), "to_number": TRANSFER_TO}],
    "sandbox": lambda call: [],
}


def answer(client, driver: Driver, call: Call) -> None:
    if driver.plays_out_calls:
        for webhook in driver.lifecycle(call):
            assert driver.report(client, call, webhook)[0] == 200
    else:
        for step in (0, 1):  # rings, is answered
            call_play_simulated(call_id=call.pk, step=step)
    call.refresh_from_db()
    assert call.status == "in-progress"


@pytest.mark.parametrize("driver", chosen("can_transfer"))
def test_transferring_a_call_in_progress_moves_it_on_and_it_is_billed_as_one_call(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    answer(client, driver, placed)
    # 100 s of its 600 s have gone: the person gets what is left, and no more.
    Call.objects.filter(pk=placed.pk).update(initiated_at=timezone.now() - timedelta(seconds=100))
    placed.refresh_from_db()

    with driver.wire() as wire:
        driver.accept_commands(wire, placed)
        response = tenant.client.post(
            f"/calls/{placed.pk}/transfer", {"to_phone_number": TRANSFER_TO}, format="json"
        )
        asked = driver.commands(wire)

    assert response.status_code == 200, response.json()
    body = response.json()
    placed.refresh_from_db()
    assert (body["status"], body["transferred_to"]) == ("in-progress", TRANSFER_TO)
    assert (placed.status, placed.transferred_to) == ("in-progress", TRANSFER_TO)
    assert placed.transferred_at is not None
    assert body["transferred_at"] == placed.transferred_at.isoformat().replace("+00:00", "Z")
    assert asked == TRANSFERRED[driver.name](placed)
    if driver.name == "telnyx":
        assert asked[1][2]["command_id"].startswith(f"transfer-{placed.pk}-")
    event = CallEvent.objects.filter(call=placed).last()
    assert (event.status, event.source, event.detail) == (
        "in-progress",
        driver.name,
        {"transferred_to": TRANSFER_TO},
    )
    told = WebhookEvent.objects.filter(subject_id=placed.pk, type="call.transferred")
    assert [e.data["transferred_to"] for e in told] == [TRANSFER_TO]

    if driver.plays_out_calls:  # one call until the provider reports its end
        ended = driver.event(placed, "completed", duration=125)
        assert driver.report(client, placed, ended) == (200, {"detail": "Applied."})
        settle_on_the_record(driver, placed, talked=125)
        placed.refresh_from_db()
        assert (placed.status, placed.duration_seconds, placed.cost_cents) == (
            "completed",
            125,
            21,
        )
        charges = LedgerEntry.objects.filter(call_id=placed.pk, kind="charge")
        assert [c.amount_cents for c in charges] == [-21]
    assert_money_consistent(tenant.organization)


@pytest.mark.parametrize("driver", chosen("can_transfer"))
def test_a_call_not_in_progress_is_not_transferred(
    client, tenant: Tenant, driver: Driver, placed: Call
) -> None:
    with driver.wire() as wire:
        ringing = tenant.client.post(
            f"/calls/{placed.pk}/transfer", {"to_phone_number": TRANSFER_TO}, format="json"
        )
    assert (ringing.status_code, ringing.json()) == (
        409,
        {"detail": "Only a call in progress can be transferred, and this call is initiated."},
    )
    Call.objects.filter(pk=placed.pk).update(status="completed")
    with driver.wire() as wire:
        over = tenant.client.post(
            f"/calls/{placed.pk}/transfer", {"to_phone_number": TRANSFER_TO}, format="json"
        )

    assert (over.status_code, over.json()) == (
        409,
        {"detail": "Only a call in progress can be transferred, and this call is completed."},
    )
    assert wire.sent == []
    placed.refresh_from_db()
    assert (placed.transferred_to, placed.transferred_at) == ("", None)
    assert not CallEvent.objects.filter(call=placed).exists()


@pytest.mark.parametrize("driver", drivers())
def test_another_organizations_call_cannot_be_transferred(
    client, tenant: Tenant, outsider: Tenant, driver: Driver, placed: Call
) -> None:
    with driver.wire() as wire:
        response = outsider.client.post(
            f"/calls/{placed.pk}/transfer", {"to_phone_number": TRANSFER_TO}, format="json"
        )
    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
    assert wire.sent == [] or not driver.dials_over_the_wire
    placed.refresh_from_db()
    assert (placed.status, placed.transferred_to) == ("initiated", "")


@pytest.mark.parametrize("driver", drivers())
def test_a_provider_that_cannot_transfer_says_so(
    client, tenant: Tenant, driver: Driver, placed: Call, monkeypatch
) -> None:
    """Every provider we carry can transfer today: the flag is what is asked, before anything
    is sent, so each is checked with it turned off."""
    monkeypatch.setattr(type(get_provider(driver.name)), "can_transfer", False)
    answer(client, driver, placed)
    with driver.wire() as wire:
        response = tenant.client.post(
            f"/calls/{placed.pk}/transfer", {"to_phone_number": TRANSFER_TO}, format="json"
        )

    label = get_provider(driver.name).label
    assert (response.status_code, response.json()) == (
        422,
        {"detail": f"{label} calls cannot be transferred."},
    )
    assert wire.sent == []
    placed.refresh_from_db()
    assert (placed.status, placed.transferred_to) == ("in-progress", "")

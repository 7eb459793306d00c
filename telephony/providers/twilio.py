"""Twilio through its official SDK (`twilio`, HTTP through `requests`)."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from telephony.providers.base import (
    Account,
    AccountField,
    CallContext,
    CallRecordQuery,
    DetectionEvent,
    OutboundCall,
    PlacedCallQuery,
    Provider,
    ProviderError,
    StatusEvent,
    WebhookAnswer,
    WebhookRejected,
    WebhookRequest,
)
from telephony.providers.parsing import sent_before_it_failed, whole_seconds
from telephony.states import AnsweredBy, CallState

logger = logging.getLogger(__name__)

STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]

# Twilio's CallStatus values are our state names already; "answered" is only an event name.
STATES = {
    "queued": CallState.INITIATED,
    "initiated": CallState.INITIATED,
    "ringing": CallState.RINGING,
    "in-progress": CallState.IN_PROGRESS,
    "answered": CallState.IN_PROGRESS,
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "canceled": CallState.CANCELED,
}


# AnsweredBy of the AsyncAmdStatusCallback → who answered. With DetectMessageEnd a machine's
# verdict comes when its greeting ends (machine_end_*); with Enable, at once (machine_start).
ANSWERED_BY = {
    "human": AnsweredBy.HUMAN,
    "machine_start": AnsweredBy.MACHINE,
    "machine_end_beep": AnsweredBy.MACHINE,
    "machine_end_silence": AnsweredBy.MACHINE,
    "machine_end_other": AnsweredBy.MACHINE,
    "fax": AnsweredBy.FAX,
    "unknown": AnsweredBy.UNKNOWN,
}


@cache
def _http_client() -> TwilioHttpClient:
    # One pooled HTTP client per process: a new TLS connection per call costs more than the call.
    client = TwilioHttpClient(timeout=settings.PROVIDER_TIMEOUT_SECONDS, pool_connections=True)
    # As many kept connections as the process has threads placing calls at once (the SDK keeps
    # CPUs + 4): past that, every call would open and throw away a TLS connection of its own.
    adapter = HTTPAdapter(pool_maxsize=settings.PROVIDER_HTTP_POOL_SIZE)
    assert client.session is not None
    client.session.mount("https://", adapter)
    client.session.mount("http://", adapter)
    return client


class TwilioProvider(Provider):
    account_fields = (
        AccountField(
            "account_sid",
            "Account SID",
            help_text="On the Twilio console's home page: AC and 32 hexadecimal digits.",
            pattern="AC[0-9a-f]{32}",
            pattern_message="An Account SID is AC and 32 hexadecimal digits (0-9, a-f).",
        ),
        AccountField("auth_token", "Auth token", secret=True),
    )
    can_find_calls = True
    can_fetch_calls = True
    can_hang_up = True
    account_can_forge_webhooks = True
    can_transfer = True
    can_detect_machines = True

    def client(self, account: Account) -> Client:
        client = Client(
            account.settings["account_sid"],
            account.secrets["auth_token"],
            http_client=_http_client(),
        )
        base_url = getattr(settings, "TWILIO_API_BASE_URL", "")
        if base_url:  # a local fake for benchmarks, on loopback only (see settings)
            client.api.base_url = base_url
        return client

    def place_call(self, call: OutboundCall, account: Account) -> str:
        try:
            created = self.client(account).calls.create(
                to=call.to_number,
                from_=call.from_number,
                url=call.answer_url,
                method="POST",
                status_callback=call.status_url,
                status_callback_method="POST",
                status_callback_event=STATUS_EVENTS,
                time_limit=call.time_limit_seconds,
                timeout=call.ring_timeout_seconds,
                **self.machine_detection(call),
            )
        except TwilioRestException as exc:
            code = f" (error {exc.code})" if exc.code else ""
            message = exc.msg.removeprefix("Unable to create record: ")
            raise ProviderError(f"Twilio refused the call: {message}{code}") from exc
        except requests.ConnectTimeout as exc:
            # Never sent: nothing can have been placed, so it is safe to try again.
            raise ProviderError("Could not reach Twilio in time.", unavailable=True) from exc
        except requests.RequestException as exc:
            if not sent_before_it_failed(exc):
                logger.warning("twilio request failed: %s", type(exc).__name__)
                raise ProviderError("Could not reach Twilio.") from exc
            # Sent, and no answer (in time, or at all): Twilio may have placed the call.
            raise ProviderError("Twilio did not answer in time.", timeout=True) from exc
        except TwilioException as exc:
            logger.warning("twilio request failed: %s", type(exc).__name__)
            raise ProviderError("Could not reach Twilio.") from exc
        return str(created.sid)

    @staticmethod
    def machine_detection(call: OutboundCall) -> dict[str, Any]:
        """Asynchronous AMD: the answer URL is fetched at once (a person is not kept waiting)
        and the verdict is posted to the status URL. Leaving a message needs the end of the
        greeting, which DetectMessageEnd waits for."""
        if call.machine_detection is None:
            return {}
        return {
            "machine_detection": (
                "DetectMessageEnd" if call.machine_detection.waits_for_the_beep else "Enable"
            ),
            "async_amd": "true",
            "async_amd_status_callback": call.status_url,
            "async_amd_status_callback_method": "POST",
        }

    def find_calls(self, query: PlacedCallQuery, account: Account) -> list[StatusEvent]:
        """Twilio's list of calls cannot be filtered by anything we set (our call id is only in
        the webhook URLs, which the list does not return), so candidates are the calls between
        the same numbers created since we recorded ours; the caller skips ids it already knows.
        """
        try:
            found = self.client(account).calls.list(
                to=query.to_number, from_=query.from_number, limit=20
            )
        except TwilioRestException as exc:
            raise ProviderError(f"Twilio refused the lookup (HTTP {exc.status}).") from exc
        except (requests.RequestException, TwilioException) as exc:
            raise ProviderError("Could not reach Twilio.") from exc
        # Twilio's timestamps have whole seconds, and clocks differ a little.
        not_before = query.not_before - timedelta(seconds=5)
        not_after = query.not_after + timedelta(seconds=5)
        candidates = [
            c
            for c in found
            if c.date_created is not None and not_before <= c.date_created <= not_after
        ]
        candidates.sort(key=lambda c: c.date_created)
        return [
            StatusEvent(
                state=STATES.get(str(c.status), CallState.INITIATED),
                provider_call_id=str(c.sid),
                duration_seconds=whole_seconds(c.duration),
                raw={"CallStatus": str(c.status), "found_by": "reconcile"},
            )
            for c in candidates
        ]

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        try:
            record = self.client(account).calls(query.call_sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise ProviderError(f"Twilio refused the lookup (HTTP {exc.status}).") from exc
        except (requests.RequestException, TwilioException) as exc:
            raise ProviderError("Could not reach Twilio.") from exc
        status = str(record.status)
        return StatusEvent(
            state=STATES.get(status, CallState.INITIATED),
            provider_call_id=str(record.sid),
            duration_seconds=whole_seconds(record.duration),
            reason=f"Twilio's record: {status}",
            raw={"CallStatus": status, "CallDuration": str(record.duration or "")},
        )

    def update(self, query: CallRecordQuery, account: Account, **changes: Any) -> None:
        """Change the live call (its status, or the TwiML it runs). Raises ProviderError."""
        try:
            self.client(account).calls(query.call_sid).update(**changes)
        except TwilioRestException as exc:
            code = f" (error {exc.code})" if exc.code else ""
            message = exc.msg.removeprefix("Unable to update record: ")
            raise ProviderError(f"Twilio refused: {message}{code}") from exc
        except (requests.RequestException, TwilioException) as exc:
            raise ProviderError("Could not reach Twilio.") from exc

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        # "completed", whatever we have heard: Twilio's "canceled" ends a call that is queued or
        # ringing but does not affect one in progress, and the callee may have answered while
        # the answer's webhook is lost or on its way. "completed" hangs up a call in any state
        # (one that was still ringing then ends canceled).
        self.update(query, account, status="completed")
        return None  # its status webhook reports the end

    def leave_message(
        self, query: CallRecordQuery, account: Account, *, message: str
    ) -> StatusEvent | None:
        # New TwiML replaces the media stream: Twilio says the message, then hangs up.
        self.update(query, account, twiml=self.answer_with_message(message).body)
        return None  # its status webhook reports the end

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        # The call's new TwiML dials the person (a child call, from our number); when that leg
        # ends, nothing is left to run and the call ends. The dial never outlasts the call's own
        # time limit, which is what the held money pays for.
        response = VoiceResponse()
        dial = Dial(
            caller_id=query.from_number or None,
            time_limit=query.seconds_left(timezone.now()),
        )
        dial.number(to_number)
        response.append(dial)
        self.update(query, account, twiml=str(response))

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise WebhookRejected("Missing X-Twilio-Signature.")
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER, ""))
        validator = RequestValidator(account.secrets.get("auth_token", ""))
        if not validator.validate(request.url, request.form, signature, algorithm):
            raise WebhookRejected("Invalid X-Twilio-Signature.")

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        form = request.form
        state = STATES.get(form.get("CallStatus", ""))
        if state is None:
            return None
        duration = form.get("CallDuration") or form.get("Duration") or ""
        reason = form.get("SipResponseCode") or form.get("ErrorCode") or ""
        return StatusEvent(
            state=state,
            provider_call_id=form.get("CallSid", ""),
            duration_seconds=whole_seconds(duration),
            reason=str(reason),
            raw={
                key: form.get(key)
                for key in (
                    "CallStatus",
                    "CallDuration",
                    "SipResponseCode",
                    "ErrorCode",
                    "AnsweredBy",
                )
                if form.get(key)
            },
        )

    def parse_detection(self, request: WebhookRequest) -> DetectionEvent | None:
        value = str(request.form.get("AnsweredBy", ""))
        answered_by = ANSWERED_BY.get(value)
        if answered_by is None:
            return None
        return DetectionEvent(
            answered_by=answered_by,
            greeting_ended=value.startswith("machine_end_"),
            provider_call_id=request.form.get("CallSid", ""),
            raw={
                key: str(request.form.get(key))
                for key in ("AnsweredBy", "MachineDetectionDuration")
                if request.form.get(key)
            },
        )

    def answer_with_message(self, message: str) -> WebhookAnswer:
        response = VoiceResponse()
        response.say(message)
        response.hangup()
        return WebhookAnswer(body=str(response), content_type="application/xml")

    def answer_with_hangup(self) -> WebhookAnswer:
        response = VoiceResponse()
        response.hangup()
        return WebhookAnswer(body=str(response), content_type="application/xml")

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=media_stream_url)
        for name, value in context.as_parameters().items():
            stream.parameter(name=name, value=value)
        response.append(connect)
        return WebhookAnswer(body=str(response), content_type="application/xml")

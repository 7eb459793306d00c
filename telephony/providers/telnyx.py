"""Telnyx Call Control through its official SDK (`telnyx` 4.x, HTTP through `httpx`).

Telnyx has no answer URL: the media stream is part of the dial command (`stream_url`), and every
event of the call is posted to the `webhook_url` we give it, which is the call's status URL.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import telnyx
from django.conf import settings
from django.utils import timezone
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from telephony.providers.base import (
    Account,
    AccountField,
    CallContext,
    CallRecordQuery,
    DetectionEvent,
    OutboundCall,
    Provider,
    ProviderError,
    StatusEvent,
    WebhookAnswer,
    WebhookRejected,
    WebhookRequest,
)
from telephony.providers.parsing import error_detail
from telephony.states import AnsweredBy, CallState

logger = logging.getLogger(__name__)

STREAM_TRACK: Final = "both_tracks"

# One retry: it covers a dropped connection or a passing 5xx, and `command_id` makes a repeated
# dial harmless at Telnyx (it ignores a second dial with the same id). Each attempt gets half of
# PROVIDER_TIMEOUT_SECONDS, so both together stay within our own budget.
MAX_RETRIES = 1
# The SDK honours a Retry-After of up to 60 s before retrying; a web request cannot wait that
# long with the caller on the line, so the pause between attempts is capped.
MAX_RETRY_WAIT_SECONDS = 1.0

# call.hangup's hangup_cause → how the call ended. An answered call ends normal_clearing (either
# side hung up) or time_limit (our time limit cut it); anything unknown is a failure.
HANGUP_STATES = {
    "normal_clearing": CallState.COMPLETED,
    "time_limit": CallState.COMPLETED,
    "user_busy": CallState.BUSY,
    "timeout": CallState.NO_ANSWER,
    "no_answer": CallState.NO_ANSWER,
    "originator_cancel": CallState.CANCELED,
    "call_rejected": CallState.FAILED,
    "not_found": CallState.FAILED,
    "unspecified": CallState.FAILED,
}

EVENT_STATES = {
    "call.initiated": CallState.INITIATED,
    "call.answered": CallState.IN_PROGRESS,
}

# Machine detection's verdicts: the event's `result` → who answered.
DETECTION_RESULTS = {
    "call.machine.detection.ended": {
        "human": AnsweredBy.HUMAN,
        "machine": AnsweredBy.MACHINE,
        "not_sure": AnsweredBy.UNKNOWN,
    },
    "call.machine.premium.detection.ended": {
        "human_residence": AnsweredBy.HUMAN,
        "human_business": AnsweredBy.HUMAN,
        "machine": AnsweredBy.MACHINE,
        "fax_detected": AnsweredBy.FAX,
        "silence": AnsweredBy.UNKNOWN,
        "not_sure": AnsweredBy.UNKNOWN,
    },
}
# The end of a machine's greeting (a beep, or silence): sent only for a machine.
GREETING_ENDED_EVENTS = frozenset(
    {"call.machine.greeting.ended", "call.machine.premium.greeting.ended"}
)
# Our voicemail message (a `speak` command) has been played.
SPEAK_ENDED = "call.speak.ended"
# Telnyx's text-to-speech voice for a voicemail message.
VOICEMAIL_VOICE: Final = "AWS.Polly.Joanna-Neural"


class _BoundedTelnyx(telnyx.Telnyx):
    def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
        return min(super()._calculate_retry_timeout(*args, **kwargs), MAX_RETRY_WAIT_SECONDS)


@cache
def _http_client() -> httpx.Client:
    # One pooled HTTP client per process, shared by every account's SDK client (the API key
    # travels per request): a new TLS connection per call costs more than the call. As many kept
    # connections as the process has threads placing calls at once (the SDK keeps 20).
    size = settings.PROVIDER_HTTP_POOL_SIZE
    return telnyx.DefaultHttpxClient(
        limits=httpx.Limits(max_connections=max(size, 100), max_keepalive_connections=size)
    )


def _event(body: bytes) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
    """A webhook's `data`, its `event_type` and its `payload` (an object), or None when the
    body is not shaped so."""
    try:
        data = json.loads(body)["data"]
        event_type = str(data["event_type"])
        payload = data.get("payload") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(payload, dict):
        return None
    return data, event_type, payload


def stream_url(media_stream_url: str, context: CallContext) -> str:
    """The media stream URL with the call's context in its query (Telnyx streams carry no
    custom parameters, only the URL)."""
    parts = urlsplit(media_stream_url)
    query = "&".join(filter(None, [parts.query, urlencode(context.as_parameters())]))
    return urlunsplit(parts._replace(query=query))


def client_state(call_id: str) -> str:
    return base64.b64encode(call_id.encode()).decode()


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TelnyxProvider(Provider):
    account_fields = (
        AccountField("api_key", "API key", secret=True, help_text="Starts with KEY."),
        AccountField(
            "connection_id",
            "Call Control connection id",
            help_text="The Call Control Application (connection) the numbers dial through.",
        ),
        AccountField(
            "public_key",
            "Webhook public key",
            help_text="Base64 Ed25519 public key from the portal (Keys & Credentials → Public "
            "Key); webhooks are verified with it.",
        ),
    )
    # Nothing asks Telnyx for its calls yet: a call a crash left queued is failed, not verified.
    can_find_calls = False
    # Its record (GET /calls/{call_control_id}) says whether the call is alive and when it
    # ended, not how long it was answered: the talk time is measured from call.answered.
    can_fetch_calls = True
    can_hang_up = True
    can_transfer = True
    can_detect_machines = True

    def client(self, account: Account) -> telnyx.Telnyx:
        timeout = settings.PROVIDER_TIMEOUT_SECONDS / (MAX_RETRIES + 1)
        return _BoundedTelnyx(
            api_key=account.secrets["api_key"],
            # A local fake for benchmarks; never set in production.
            base_url=getattr(settings, "TELNYX_API_BASE_URL", "") or None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            max_retries=MAX_RETRIES,
            http_client=_http_client(),
        )

    def place_call(self, call: OutboundCall, account: Account) -> str:
        try:
            dialled = self.client(account).calls.dial(
                connection_id=account.settings["connection_id"],
                to=call.to_number,
                from_=call.from_number,
                webhook_url=call.status_url,
                webhook_url_method="POST",
                client_state=client_state(call.call_id),
                command_id=call.call_id,
                time_limit_secs=call.time_limit_seconds,
                timeout_secs=call.ring_timeout_seconds,
                stream_url=stream_url(call.media_stream_url, call.context),
                stream_track=STREAM_TRACK,
                **self.machine_detection(call),
            )
        except telnyx.APIStatusError as exc:
            raise ProviderError(
                f"Telnyx refused the call: {error_detail(exc.body)} (HTTP {exc.status_code})"
            ) from exc
        except telnyx.APITimeoutError as exc:
            raise ProviderError("Telnyx did not answer in time.", timeout=True) from exc
        except telnyx.APIError as exc:
            logger.warning("telnyx request failed: %s", type(exc).__name__)
            raise ProviderError("Could not reach Telnyx.") from exc
        data = dialled.data
        if data is None or not data.call_control_id:
            raise ProviderError("Telnyx accepted the call but returned no call id.")
        return str(data.call_control_id)

    @staticmethod
    def machine_detection(call: OutboundCall) -> dict[str, Any]:
        """Telnyx detects while the call streams (nobody waits for it) and posts its verdict as
        an event; `greeting_end` also reports the end of a machine's greeting."""
        if call.machine_detection is None:
            return {}
        mode = "greeting_end" if call.machine_detection.waits_for_the_beep else "detect"
        return {"answering_machine_detection": mode}

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        try:
            record = self.client(account).calls.retrieve_status(query.call_sid).data
        except telnyx.NotFoundError:
            return None
        except telnyx.APIStatusError as exc:
            raise ProviderError(f"Telnyx refused the lookup (HTTP {exc.status_code}).") from exc
        except telnyx.APIError as exc:
            raise ProviderError("Could not reach Telnyx.") from exc
        if record is None:
            return None
        if record.is_alive:
            return StatusEvent(state=CallState.INITIATED, provider_call_id=query.call_sid)
        return StatusEvent(
            state=CallState.COMPLETED,
            provider_call_id=query.call_sid,
            reason="Telnyx's record: ended",
            raw={"is_alive": "false", "end_time": str(record.end_time or "")},
            occurred_at=_timestamp(record.end_time),
        )

    @staticmethod
    def command(send: Callable[[], object]) -> None:
        """Send one call-control command. Raises ProviderError."""
        try:
            send()
        except telnyx.APIStatusError as exc:
            raise ProviderError(
                f"Telnyx refused: {error_detail(exc.body)} (HTTP {exc.status_code})"
            ) from exc
        except telnyx.APIError as exc:
            raise ProviderError("Could not reach Telnyx.") from exc

    def stop_streaming(self, query: CallRecordQuery, account: Account) -> None:
        """The assistant's stream leaves the call (it was part of the dial): it must not hear,
        nor speak over, what the call does next. A stream already gone is no failure."""
        actions = self.client(account).calls.actions
        try:
            self.command(lambda: actions.stop_streaming(query.call_sid))
        except ProviderError as exc:
            logger.info("telnyx call %s: stream not stopped: %s", query.call_id, exc)

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        actions = self.client(account).calls.actions
        # command_id: a retried hang-up is the same command to Telnyx.
        self.command(lambda: actions.hangup(query.call_sid, command_id=f"hangup-{query.call_id}"))
        return None  # its call.hangup webhook reports the end

    def leave_message(
        self, query: CallRecordQuery, account: Account, *, message: str
    ) -> StatusEvent | None:
        # Spoken by Telnyx; its call.speak.ended event then has us hang up.
        self.stop_streaming(query, account)
        actions = self.client(account).calls.actions
        self.command(
            lambda: actions.speak(
                query.call_sid,
                payload=message,
                voice=VOICEMAIL_VOICE,
                command_id=f"voicemail-{query.call_id}",
            )
        )
        return None

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        # Telnyx dials the person and bridges them to the callee; the call (our leg) lives until
        # either hangs up, and never past what is left of its time limit.
        self.stop_streaming(query, account)
        actions = self.client(account).calls.actions
        now = timezone.now()
        self.command(
            lambda: actions.transfer(
                query.call_sid,
                to=to_number,
                from_=query.from_number or telnyx.omit,
                time_limit_secs=query.seconds_left(now),
                # The same command if the SDK sends it again; a later transfer is a new one.
                command_id=f"transfer-{query.call_id}-{int(now.timestamp())}",
            )
        )

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        public_key = account.settings.get("public_key", "")
        if not public_key:
            raise WebhookRejected("The Telnyx account has no public key.")
        try:
            # Checks the timestamp is within 5 minutes, then Ed25519 over "timestamp|raw body".
            verify_webhook_signature(request.body, request.headers, public_key)
        except WebhookVerificationError as exc:
            raise WebhookRejected(str(exc)) from None
        except UnicodeDecodeError:
            # The helper decodes the body before its own error handling: not a Telnyx body.
            raise WebhookRejected("The body is not UTF-8.") from None

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        parsed = _event(request.body)
        if parsed is None:
            return None
        data, event_type, payload = parsed
        call_control_id = str(payload.get("call_control_id") or "")
        occurred_at = _timestamp(data.get("occurred_at"))
        raw = {"event_type": event_type}
        for key in ("hangup_cause", "hangup_source", "sip_hangup_cause", "result"):
            if payload.get(key):
                raw[key] = str(payload[key])
        if event_type == "call.hangup":
            cause = str(payload.get("hangup_cause") or "unspecified")
            state = HANGUP_STATES.get(cause, CallState.FAILED)
            sip = payload.get("sip_hangup_cause")
            # Telnyx reports no duration, and the hangup's start_time is when the call was
            # dialled, ringing included: the talk time is measured from call.answered instead.
            return StatusEvent(
                state=state,
                provider_call_id=call_control_id,
                duration_seconds=None if state == CallState.COMPLETED else 0,
                reason=f"{cause} (SIP {sip})" if sip and sip != "unspecified" else cause,
                raw=raw,
                occurred_at=_timestamp(payload.get("end_time")) or occurred_at,
            )
        progress = EVENT_STATES.get(event_type)
        if progress is None:
            return None  # machine detection's are parse_detection's
        return StatusEvent(
            state=progress, provider_call_id=call_control_id, raw=raw, occurred_at=occurred_at
        )

    def parse_detection(self, request: WebhookRequest) -> DetectionEvent | None:
        parsed = _event(request.body)
        if parsed is None:
            return None
        _, event_type, payload = parsed
        result = str(payload.get("result") or "")
        raw = {"event_type": event_type, **({"result": result} if result else {})}
        call_control_id = str(payload.get("call_control_id") or "")
        if event_type in DETECTION_RESULTS:
            answered_by = DETECTION_RESULTS[event_type].get(result, AnsweredBy.UNKNOWN)
            return DetectionEvent(
                answered_by=answered_by, provider_call_id=call_control_id, raw=raw
            )
        if event_type in GREETING_ENDED_EVENTS:
            return DetectionEvent(
                answered_by=AnsweredBy.MACHINE,
                greeting_ended=True,
                provider_call_id=call_control_id,
                raw=raw,
            )
        if event_type == SPEAK_ENDED:
            raw["status"] = str(payload.get("status") or "")
            return DetectionEvent(message_played=True, provider_call_id=call_control_id, raw=raw)
        return None

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        # Telnyx never asks: the stream was set on the dial. This says what it was told.
        body = {
            "stream_url": stream_url(media_stream_url, context),
            "stream_track": STREAM_TRACK,
            "client_state": client_state(context.call_id),
        }
        return WebhookAnswer(body=json.dumps(body), content_type="application/json")

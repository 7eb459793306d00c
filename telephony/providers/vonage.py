"""Vonage Voice through its official SDK (`vonage-voice` + `vonage-http-client`, HTTP through
`requests`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jwt
import pydantic
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from django.conf import settings
from django.utils import timezone
from vonage_http_client import Auth, HttpClient, HttpClientOptions
from vonage_http_client.errors import HttpRequestError
from vonage_jwt.verify_jwt import verify_signature
from vonage_utils.errors import VonageError
from vonage_voice import (
    AdvancedMachineDetection,
    Connect,
    CreateCallRequest,
    Phone,
    PhoneEndpoint,
    Talk,
    ToPhone,
    Voice,
)
from vonage_voice.models.connect_endpoints import WebsocketEndpoint

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
from telephony.providers.parsing import error_detail, sent_before_it_failed, whole_seconds
from telephony.states import AnsweredBy, CallState

logger = logging.getLogger(__name__)

AUDIO_CONTENT_TYPE = "audio/l16;rate=16000"
# Vonage signs each delivery afresh, so a token older than this is a replay.
JWT_MAX_AGE_SECONDS = 300
# Clocks differ: a token "issued" slightly in the future is still fresh.
JWT_LEEWAY_SECONDS = 30

# The event webhook's `status` → our lifecycle. Vonage: "timeout" is our ringing_timer running
# out, "unanswered" the network giving up (or the callee declining), "rejected" Vonage refusing
# to place the call at all. Anything else (human/machine, disconnected, input, record…) is no
# lifecycle change.
STATES = {
    "started": CallState.INITIATED,
    "ringing": CallState.RINGING,
    "answered": CallState.IN_PROGRESS,
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "timeout": CallState.NO_ANSWER,
    "unanswered": CallState.NO_ANSWER,
    "cancelled": CallState.CANCELED,
    "failed": CallState.FAILED,
    "rejected": CallState.FAILED,
}


# The human/machine event's `status` → who answered; a machine's `sub_state` says its greeting
# ended (`beep_start`), or that no beep came in time (`beep_timeout`: it is over all the same).
ANSWERED_BY = {"human": AnsweredBy.HUMAN, "machine": AnsweredBy.MACHINE}
GREETING_ENDED = frozenset({"beep_start", "beep_timeout"})
# How long Vonage listens for a machine's beep (its least).
BEEP_TIMEOUT_SECONDS = 45
# A connect action's longest `limit`.
MAX_CONNECT_SECONDS = 7200


# Each thread's SDK clients, by account (see VonageProvider.voice), the least recently used
# dropped past CLIENTS_PER_THREAD.
_thread_clients = threading.local()
CLIENTS_PER_THREAD = 8


@lru_cache(maxsize=64)
def _signing_key(pem: str) -> PrivateKeyTypes:
    """The application's key, parsed once per process: parsing checks the RSA key, ~35 ms."""
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _json_object(body: bytes) -> dict[str, Any] | None:
    """An event's body: a JSON object, or None for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def vonage_number(e164: str) -> str:
    """Vonage wants E.164 without the leading "+"."""
    return e164.removeprefix("+")


class VonageProvider(Provider):
    account_fields = (
        AccountField("application_id", "Application id", help_text="A Voice-enabled application."),
        AccountField(
            "private_key",
            "Private key",
            secret=True,
            multiline=True,
            help_text="The application's private key, PKCS#8 (-----BEGIN PRIVATE KEY-----).",
        ),
        AccountField(
            "signature_secret",
            "Signature secret",
            secret=True,
            help_text="From the account's API settings; signed webhooks are verified with it.",
        ),
    )
    # Nothing asks Vonage for its calls yet: a call a crash left queued is failed, not verified.
    can_find_calls = False
    can_fetch_calls = True
    can_hang_up = True
    account_can_forge_webhooks = True
    can_transfer = True
    can_detect_machines = True

    def voice(self, account: Account) -> Voice:
        """The account's SDK client for this thread. The SDK's HttpClient keeps the
        Authorization header in a dict shared by its requests, so a client is never shared
        between threads (two accounts' tokens could mix), but a thread keeps its clients, and
        with them their connections: a new client per call opened a TLS connection per call."""
        pem = account.secrets["private_key"]
        api_host = getattr(settings, "VONAGE_API_HOST", "") or "api.nexmo.com"
        timeout = max(1, math.ceil(settings.PROVIDER_TIMEOUT_SECONDS))
        digest = hashlib.sha256(pem.encode()).hexdigest()
        key = (account.settings["application_id"], digest, api_host, timeout)
        clients: OrderedDict[tuple[str, str, str, int], Voice] | None = getattr(
            _thread_clients, "voice", None
        )
        if clients is None:
            clients = _thread_clients.voice = OrderedDict()
        voice = clients.get(key)
        if voice is None:
            voice = clients[key] = self._new_voice(account, pem, api_host, timeout)
            if len(clients) > CLIENTS_PER_THREAD:
                clients.popitem(last=False)[1].http_client._session.close()
        clients.move_to_end(key)
        return voice

    @staticmethod
    def _new_voice(account: Account, pem: str, api_host: str, timeout: int) -> Voice:
        options = HttpClientOptions(
            # A local fake for benchmarks; never set in production.
            api_host=api_host,
            timeout=timeout,
            # No transport retries: Vonage has no idempotency key for a call, so a repeated POST
            # could ring the callee twice, and our own time-out stays the whole budget.
            max_retries=0,
            # One thread's client sends one request at a time.
            pool_connections=1,
            pool_maxsize=1,
        )
        try:
            key = _signing_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ProviderError("The Vonage account's private key is not a PEM key.") from None
        if "-----BEGIN PRIVATE KEY-----" not in pem:
            raise ProviderError("The Vonage account's private key must be PKCS#8.")
        auth = Auth(application_id=account.settings["application_id"], private_key=pem)
        # The SDK hands its PEM string to PyJWT, which parses and checks it again for every
        # token (~35-80 ms of CPU per call); the parsed key makes a token cost ~1 ms.
        auth._jwt_client._private_key = key
        return Voice(HttpClient(auth, options))

    def place_call(self, call: OutboundCall, account: Account) -> str:
        try:
            created = self.voice(account).create_call(
                CreateCallRequest(
                    to=[ToPhone(number=vonage_number(call.to_number))],
                    from_=Phone(number=vonage_number(call.from_number)),
                    # POST, so the answer request carries a body the signature's hash covers.
                    answer_url=[call.answer_url],
                    answer_method="POST",
                    event_url=[call.status_url],
                    event_method="POST",
                    length_timer=call.time_limit_seconds,
                    ringing_timer=call.ring_timeout_seconds,
                    advanced_machine_detection=self.machine_detection(call),
                )
            )
        except HttpRequestError as exc:
            raise ProviderError(
                f"Vonage refused the call: {error_detail(_json_body(exc))} "
                f"(HTTP {exc.response.status_code})"
            ) from exc
        except requests.ConnectTimeout as exc:
            # Never sent: nothing can have been placed, so it is safe to try again.
            raise ProviderError("Could not reach Vonage in time.", unavailable=True) from exc
        except requests.RequestException as exc:
            if not sent_before_it_failed(exc):
                logger.warning("vonage request failed: %s", type(exc).__name__)
                raise ProviderError("Could not reach Vonage.") from exc
            # Sent, and no answer (in time, or at all): Vonage may have placed the call.
            raise ProviderError("Vonage did not answer in time.", timeout=True) from exc
        except VonageError as exc:
            logger.warning("vonage request failed: %s", type(exc).__name__)
            raise ProviderError("Could not reach Vonage.") from exc
        return str(created.uuid)

    @staticmethod
    def machine_detection(call: OutboundCall) -> AdvancedMachineDetection | None:
        """Advanced detection in its asynchronous mode (`default`): the answer URL is fetched at
        once, so a person is not kept waiting, and the verdict and then the beep come as
        events. We act on them ourselves (`continue`), the same way on every provider."""
        if call.machine_detection is None:
            return None
        return AdvancedMachineDetection(
            behavior="continue",
            mode="default",
            beep_timeout=(
                BEEP_TIMEOUT_SECONDS if call.machine_detection.waits_for_the_beep else None
            ),
        )

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        try:
            record = self.voice(account).get_call(query.call_sid)
        except HttpRequestError as exc:
            if exc.response.status_code == 404:
                return None
            raise ProviderError(
                f"Vonage refused the lookup (HTTP {exc.response.status_code})."
            ) from exc
        except (requests.RequestException, VonageError) as exc:
            raise ProviderError("Could not reach Vonage.") from exc
        except pydantic.ValidationError as exc:
            raise ProviderError("Vonage's record of the call is not one we can read.") from exc
        status = str(record.status)
        return StatusEvent(
            state=STATES.get(status, CallState.INITIATED),
            provider_call_id=str(record.uuid),
            duration_seconds=whole_seconds(str(record.duration or "")),
            reason=f"Vonage's record: {status}",
            raw={"status": status, "duration": str(record.duration or "")},
        )

    @staticmethod
    def modify(send: Callable[[], object]) -> None:
        """Change a live call (PUT /v1/calls/{uuid}). Raises ProviderError."""
        try:
            send()
        except HttpRequestError as exc:
            raise ProviderError(
                f"Vonage refused: {error_detail(_json_body(exc))} (HTTP {exc.response.status_code})"
            ) from exc
        except (requests.RequestException, VonageError) as exc:
            raise ProviderError("Could not reach Vonage.") from exc

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        voice = self.voice(account)
        self.modify(lambda: voice.hangup(query.call_sid))
        return None  # its event webhook reports the end

    def leave_message(
        self, query: CallRecordQuery, account: Account, *, message: str
    ) -> StatusEvent | None:
        # The call leaves the assistant's websocket for an NCCO that says the message; with no
        # action after it, Vonage hangs up.
        voice = self.voice(account)
        self.modify(lambda: voice.transfer_call_ncco(query.call_sid, [Talk(text=message)]))
        return None  # its event webhook reports the end

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        # The call leaves the assistant's websocket for an NCCO that connects the person, from
        # our number, for no longer than is left of the call's time limit.
        connect = Connect(
            endpoint=[PhoneEndpoint(number=vonage_number(to_number))],
            from_=vonage_number(query.from_number),
            limit=min(MAX_CONNECT_SECONDS, query.seconds_left(timezone.now())),
        )
        voice = self.voice(account)
        self.modify(lambda: voice.transfer_call_ncco(query.call_sid, [connect]))

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        secret = account.secrets.get("signature_secret", "")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise WebhookRejected("Missing signed Authorization header.")
        if not secret:
            raise WebhookRejected("The Vonage account has no signature secret.")
        try:
            if not verify_signature(token, secret):
                raise WebhookRejected("Invalid JWT signature.")
        except VonageError as exc:
            raise WebhookRejected(f"Unreadable JWT: {exc}") from None
        # The signature covers the claims; the claims cover the body (the SDK leaves this to us).
        claims = jwt.decode(token, options={"verify_signature": False})
        claimed = str(claims.get("payload_hash", ""))
        if not any(
            hmac.compare_digest(claimed, digest) for digest in _payload_hashes(request.body)
        ):
            raise WebhookRejected("The body does not match the JWT's payload_hash.")
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int | float):
            raise WebhookRejected("The JWT has no iat.")
        age = time.time() - issued_at
        if age > JWT_MAX_AGE_SECONDS or age < -JWT_LEEWAY_SECONDS:
            raise WebhookRejected(f"The JWT is stale ({int(age)} s old).")

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        event = _json_object(request.body)
        if event is None:
            return None
        status = str(event.get("status") or "")
        state = STATES.get(status)
        if state is None:
            return None
        detail = str(event.get("detail") or "")
        return StatusEvent(
            state=state,
            provider_call_id=str(event.get("uuid") or ""),
            duration_seconds=whole_seconds(str(event.get("duration") or "")),
            reason=f"{status}: {detail}" if detail else status,
            raw={
                key: str(event[key])
                for key in ("status", "duration", "detail", "rate", "price", "network")
                if event.get(key)
            },
        )

    def parse_detection(self, request: WebhookRequest) -> DetectionEvent | None:
        event = _json_object(request.body)
        if event is None:
            return None
        status = str(event.get("status") or "")
        answered_by = ANSWERED_BY.get(status)
        if answered_by is None:
            return None
        sub_state = str(event.get("sub_state") or "")
        return DetectionEvent(
            answered_by=answered_by,
            greeting_ended=answered_by == AnsweredBy.MACHINE and sub_state in GREETING_ENDED,
            provider_call_id=str(event.get("call_uuid") or event.get("uuid") or ""),
            raw={key: str(event[key]) for key in ("status", "sub_state") if event.get(key)},
        )

    def answer_with_message(self, message: str) -> WebhookAnswer:
        ncco = [Talk(text=message).model_dump(by_alias=True, exclude_none=True)]
        return WebhookAnswer(body=json.dumps(ncco), content_type="application/json")

    def answer_with_hangup(self) -> WebhookAnswer:
        # Vonage ends a call whose NCCO has no action left: an empty one ends it at once.
        return WebhookAnswer(body="[]", content_type="application/json")

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        endpoint = WebsocketEndpoint(
            uri=media_stream_url,
            contentType=AUDIO_CONTENT_TYPE,
            # Vonage sends these in the websocket's first (JSON) message.
            headers=context.as_parameters(),
        )
        ncco = [
            {
                "action": "connect",
                "endpoint": [endpoint.model_dump(by_alias=True, exclude_none=True)],
            }
        ]
        return WebhookAnswer(body=json.dumps(ncco), content_type="application/json")


def _payload_hashes(body: bytes) -> list[str]:
    """What `payload_hash` may be: Vonage hashes the body as compact JSON (no whitespace, keys
    in the order sent), which is the raw body whenever it arrives compact."""
    digests = [hashlib.sha256(body).hexdigest()]
    try:
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return digests
    digests.append(hashlib.sha256(compact.encode()).hexdigest())
    return digests


def _json_body(exc: HttpRequestError) -> object:
    try:
        return exc.response.json()
    except ValueError:
        return None

"""What a provider is: plain values in, plain values out. A provider never touches a Call row."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


class ProviderError(Exception):
    """The provider refused or failed to place the call. The message is safe to show a client."""

    def __init__(self, message: str, *, timeout: bool = False, unavailable: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.unavailable = unavailable


class WebhookRejected(Exception):
    """A webhook whose signature, timestamp or body does not check out."""


@dataclass(frozen=True)
class AccountField:
    name: str
    label: str
    secret: bool = False
    required: bool = True
    multiline: bool = False
    help_text: str = ""
    # A regular expression a value must match whole, and what to say when it does not.
    pattern: str = ""
    pattern_message: str = ""


@dataclass(frozen=True)
class Account:
    """A provider account's settings and decrypted secrets (from telephony.ProviderAccount)."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallContext:
    """What the assistant's media stream needs to take over an answered call."""

    call_id: str
    assistant_id: int
    conversation_flow_id: int | None
    welcome_message: str
    agenda: str

    def as_parameters(self) -> dict[str, str]:
        params = {
            "call_id": self.call_id,
            "assistant_id": str(self.assistant_id),
            "welcome_message": self.welcome_message,
            "agenda": self.agenda,
        }
        if self.conversation_flow_id is not None:
            params["conversation_flow_id"] = str(self.conversation_flow_id)
        return params


@dataclass(frozen=True)
class MachineDetection:
    """The provider's own answering-machine detection, asked for when the call is placed."""

    on_machine: str  # a telephony.states.OnMachine value

    @property
    def waits_for_the_beep(self) -> bool:
        """The verdict must come with (or be followed by) the end of the machine's greeting."""
        return self.on_machine == "leave_message"


@dataclass(frozen=True)
class OutboundCall:
    from_number: str  # E.164
    to_number: str  # E.164
    time_limit_seconds: int
    ring_timeout_seconds: int
    answer_url: str
    status_url: str
    media_stream_url: str
    context: CallContext
    # None: no detection asked for (the call is handed to the assistant whoever answers).
    machine_detection: MachineDetection | None = None

    @property
    def call_id(self) -> str:
        return self.context.call_id


@dataclass(frozen=True)
class WebhookRequest:
    url: str  # the public URL the provider called, exactly as we gave it
    method: str
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    form: Mapping[str, Any]  # a QueryDict for form posts, empty otherwise


@dataclass(frozen=True)
class StatusEvent:
    state: str  # a telephony.states.CallState value
    provider_call_id: str = ""
    duration_seconds: int | None = None
    reason: str = ""  # why it ended, in the provider's words (SIP code, hangup cause)
    raw: Mapping[str, Any] = field(default_factory=dict)  # what we keep for the call's timeline
    # When it happened by the provider's clock, for providers that report no duration (Telnyx):
    # the talk time is then the final event's time minus the answer event's.
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class DetectionEvent:
    """What a provider's answering-machine detection reported about a call (a verified webhook,
    or a step of a simulated call)."""

    # A telephony.states.AnsweredBy value; "" when the event does not say who answered (the end
    # of a greeting, a message played).
    answered_by: str = ""
    # The machine's greeting is over (its beep, or the silence after it): a message left now is
    # recorded whole.
    greeting_ended: bool = False
    # The message we had it play (`leave_message`) has been played: the call may end.
    message_played: bool = False
    provider_call_id: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)  # kept on the call's timeline


@dataclass(frozen=True)
class ScriptStep:
    """One event of a simulated call, `at_seconds` after the call was placed: a lifecycle event,
    or (`detection`) what its machine detection reports, played only on a call that asked."""

    at_seconds: float
    event: StatusEvent
    detection: DetectionEvent | None = None


@dataclass(frozen=True)
class CallRecordQuery:
    """A placed call whose end we never heard of: what does the provider's record say?"""

    call_id: str
    call_sid: str  # the provider's id for it
    to_number: str  # E.164
    time_limit_seconds: int
    placed_at: datetime  # when the provider accepted it
    # Our number the call was placed from (E.164): the caller id a transfer presents.
    from_number: str = ""

    def seconds_left(self, now: datetime) -> int:
        """What is left of the call's time limit, counted from when the provider accepted it
        (the answer came later, so this is never more than the provider still allows)."""
        used = int((now - self.placed_at).total_seconds())
        return max(1, self.time_limit_seconds - used)


@dataclass(frozen=True)
class PlacedCallQuery:
    """A call we recorded but never heard back about: did the provider place it?"""

    call_id: str
    from_number: str  # E.164
    to_number: str  # E.164
    not_before: datetime  # when we recorded it: the provider's call cannot be older
    not_after: datetime  # when our request stopped waiting: nor can it be younger


@dataclass(frozen=True)
class WebhookAnswer:
    body: str
    content_type: str


class Provider:
    """One provider's adapter. Instances come from `telephony.providers.get_provider`, which
    hands each its registry row's name (`PhoneNumber.provider`) and label.

    What a provider can do is said by the flags below, which callers ask instead of probing;
    a method here raises NotImplementedError only when a subclass forgot it.
    """

    account_fields: ClassVar[tuple[AccountField, ...]] = ()
    # True when the provider needs no account (sandbox) or keeps its own (sip trunks).
    account_optional: ClassVar[bool] = False
    # It can be asked whether it placed a call we never heard back about (`find_calls`).
    can_find_calls: ClassVar[bool] = False
    # It can be asked for its own record of a placed call (`fetch_call`): state and duration.
    can_fetch_calls: ClassVar[bool] = False
    # It can be told to end a call it placed (`hang_up`).
    can_hang_up: ClassVar[bool] = False
    # Its calls play out from a script (`call_script`) on our own worker, not at a provider.
    simulates_calls: ClassVar[bool] = False
    # Its calls are reported by signed webhooks (SIP calls by the agent, sandbox calls by no one).
    sends_webhooks: ClassVar[bool] = True
    # Its webhooks are signed with a secret of the account (Twilio's auth token, Vonage's
    # signature secret), which the organization holds: it could sign an end of its own making.
    # (Telnyx signs with its own private key.)
    account_can_forge_webhooks: ClassVar[bool] = False
    # Whoever carries its calls says every few seconds which are still up (`Call.last_heard_at`;
    # the SIP agents): a call that goes quiet has lost its carrier, and ended when last heard.
    reports_liveness: ClassVar[bool] = False
    # It can move a call in progress on to another number and leave it (`transfer`).
    can_transfer: ClassVar[bool] = False
    # It runs answering-machine detection on a call that asks (`OutboundCall.machine_detection`)
    # without keeping the callee waiting, reports the verdict (`parse_detection`), and can
    # leave a message with its own text-to-speech (`leave_message`).
    can_detect_machines: ClassVar[bool] = False

    def __init__(self, *, name: str, label: str) -> None:
        self.name = name
        self.label = label

    def place_call(self, call: OutboundCall, account: Account) -> str:
        """Ask the provider to dial; returns its call id. Raises ProviderError."""
        raise NotImplementedError

    def find_calls(self, query: PlacedCallQuery, account: Account) -> list[StatusEvent]:
        """For a provider that `can_find_calls`: its calls that may be the one placed for
        `query`, oldest first, each as its latest state (empty: it placed none). Raises
        ProviderError when the provider cannot be asked now."""
        raise NotImplementedError

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        """For a provider that `can_fetch_calls`: the call as its own record has it now (a
        final state with the billed duration once it has ended), or None when it has no record
        of the call. Raises ProviderError when it cannot be asked now."""
        raise NotImplementedError

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        """For a provider that `can_hang_up`: end the call now (cancel it while it rings).
        Returns None when the provider reports the end itself (its final event then settles
        the call as usual), or the final event when nobody else will (the sandbox). Raises
        ProviderError."""
        raise NotImplementedError

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        """For a provider that `can_transfer`: connect the callee of the call in progress to
        `to_number` (E.164) in a cold transfer. The call stays one call, with the same provider
        id, until the provider reports its end. Raises ProviderError."""
        raise NotImplementedError

    def leave_message(
        self, query: CallRecordQuery, account: Account, *, message: str
    ) -> StatusEvent | None:
        """For a provider that `can_detect_machines`: play `message` into the answered call with
        the provider's text-to-speech, in place of whatever the call was doing, then end it.
        Returns None when the provider reports the end itself, or the final event when nobody
        else will (the sandbox). Raises ProviderError."""
        raise NotImplementedError

    def parse_detection(self, request: WebhookRequest) -> DetectionEvent | None:
        """The machine-detection result a verified webhook carries (None: none)."""
        return None

    def call_script(
        self, *, call_sid: str, to_number: str, time_limit_seconds: int
    ) -> list[ScriptStep]:
        """For a provider that `simulates_calls`: the whole lifecycle the call plays, in order,
        each event at its offset from when the call was placed. The same call always gets the
        same script."""
        raise NotImplementedError

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        """Raise WebhookRejected unless the request provably comes from the provider."""
        raise NotImplementedError

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        """The lifecycle event a verified status webhook carries (None: nothing for us)."""
        raise NotImplementedError

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        """Instructions that hand an answered call to the assistant's media stream."""
        raise NotImplementedError

    def answer_with_message(self, message: str) -> WebhookAnswer:
        """Instructions that play `message` into an answered call and then end it, handing it
        to no one (a machine known to have answered before the call was handed over)."""
        body = json.dumps({"say": message, "hangup": True})
        return WebhookAnswer(body=body, content_type="application/json")

    def answer_with_hangup(self) -> WebhookAnswer:
        """Instructions that end an answered call at once, handing it to no one (a call that is
        over by our books). Providers with no answer document of their own say it in JSON."""
        return WebhookAnswer(body=json.dumps({"hangup": True}), content_type="application/json")

"""A labelled test mode: no account, nothing is dialled, and every call plays out a believable
lifecycle on a clock that starts when it is placed.

A call's script (`call_script`) follows from its id and destination; the background worker
plays it at its times (faster with SANDBOX_TIME_SCALE), stamping each event on the call's own
clock, through the same lifecycle service as real webhooks, so the money settles exactly as it
would. Nobody has to read the call for it to end.

The last digits of the destination choose the outcome, so every path can be tried:
  ...0002 busy, ...0003 no answer, ...0500 the provider refuses (502), ...0504 it times out (504);
  ...0009 an answering machine answers: its greeting, then a beep, then it records until it
  hangs up after MACHINE_RECORDS_SECONDS;
  anything else rings, is answered and hangs up after 15-60 s (never past the time limit).

A call that asked for machine detection is told who answered DETECTED_AT seconds in (a person,
or for ...0009 a machine, whose beep comes at BEEP_AT); a call that did not is told nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from telephony.providers.base import (
    Account,
    CallContext,
    CallRecordQuery,
    DetectionEvent,
    OutboundCall,
    PlacedCallQuery,
    Provider,
    ProviderError,
    ScriptStep,
    StatusEvent,
    WebhookAnswer,
    WebhookRejected,
    WebhookRequest,
)
from telephony.states import AnsweredBy, CallState

RING_AT = 1
ANSWER_AT = 4
OUTCOME_AT = 6
DETECTED_AT = 6  # machine detection's verdict, 2 s after the answer
BEEP_AT = 12  # the machine's greeting is over
MACHINE_RECORDS_SECONDS = 40  # from its answer until the machine hangs up
MACHINE_GREETING = "Hi, you've reached Sam. Leave a message after the beep."
# How fast the sandbox "says" a voicemail message.
WORDS_PER_SECOND = 2.5


class SandboxProvider(Provider):
    account_optional = True
    can_find_calls = True
    can_fetch_calls = True
    can_hang_up = True
    simulates_calls = True
    sends_webhooks = False
    can_transfer = True
    can_detect_machines = True

    def place_call(self, call: OutboundCall, account: Account) -> str:
        if call.to_number.endswith("0500"):
            raise ProviderError("Sandbox: the destination is unreachable (simulated refusal).")
        if call.to_number.endswith("0504"):
            raise ProviderError("Sandbox: simulated time-out.", timeout=True)
        return "SB" + secrets.token_hex(16)

    def find_calls(self, query: PlacedCallQuery, account: Account) -> list[StatusEvent]:
        # Nothing is dialled outside this process: a call that never got its id was never placed.
        return []

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        """Where the call's script has got to by now (the worker plays it; this is for a call
        whose played steps were lost)."""
        elapsed = (timezone.now() - query.placed_at).total_seconds() * settings.SANDBOX_TIME_SCALE
        script = self.call_script(
            call_sid=query.call_sid,
            to_number=query.to_number,
            time_limit_seconds=query.time_limit_seconds,
        )
        reached = [step for step in script if step.at_seconds <= elapsed and step.detection is None]
        if not reached:
            return StatusEvent(state=CallState.INITIATED, provider_call_id=query.call_sid)
        step = reached[-1]
        return replace(step.event, occurred_at=query.placed_at + timedelta(seconds=step.at_seconds))

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        """The end, now, on the call's own clock: nobody else will report it."""
        reason = "hung up on request"
        if not answered:
            return StatusEvent(
                CallState.CANCELED, query.call_sid, 0, reason, occurred_at=timezone.now()
            )
        elapsed = (timezone.now() - query.placed_at).total_seconds() * settings.SANDBOX_TIME_SCALE
        talked = int(min(max(0.0, elapsed - ANSWER_AT), self.scripted_talk(query)))
        ended_at = query.placed_at + timedelta(seconds=ANSWER_AT + talked)
        return StatusEvent(
            CallState.COMPLETED, query.call_sid, talked, reason, occurred_at=ended_at
        )

    def leave_message(
        self, query: CallRecordQuery, account: Account, *, message: str
    ) -> StatusEvent | None:
        """The message is said from now, at WORDS_PER_SECOND, then the call ends: that end is
        reported here, on the call's own clock, nobody else reporting it."""
        elapsed = (timezone.now() - query.placed_at).total_seconds() * settings.SANDBOX_TIME_SCALE
        speaking = max(1, round(len(message.split()) / WORDS_PER_SECOND))
        # Never past the script's own end (a machine stops recording then).
        talked = int(min(max(0.0, elapsed - ANSWER_AT) + speaking, self.scripted_talk(query)))
        ended_at = query.placed_at + timedelta(seconds=ANSWER_AT + talked)
        return StatusEvent(
            CallState.COMPLETED,
            query.call_sid,
            talked,
            f"the message was played ({speaking} s), then the call hung up",
            occurred_at=ended_at,
        )

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        """Moved on as a provider would: the callee now talks with `to_number`, and the call
        plays out the rest of its script, ending when it would have."""

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        # Nothing outside this process speaks for the sandbox.
        raise WebhookRejected("The sandbox sends no webhooks.")

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        return None

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        body = {"stream_url": media_stream_url, "parameters": context.as_parameters()}
        return WebhookAnswer(body=json.dumps(body), content_type="application/json")

    @classmethod
    def scripted_talk(cls, query: CallRecordQuery) -> int:
        """How long the call's script has it talk after the answer."""
        if query.to_number.endswith("0009"):
            return min(MACHINE_RECORDS_SECONDS, query.time_limit_seconds)
        return cls.talk_seconds(query.call_sid, query.time_limit_seconds)

    @staticmethod
    def talk_seconds(call_sid: str, time_limit_seconds: int) -> int:
        spread = int(hashlib.sha256(call_sid.encode()).hexdigest()[:8], 16) % 46
        return min(15 + spread, time_limit_seconds)

    def call_script(
        self, *, call_sid: str, to_number: str, time_limit_seconds: int
    ) -> list[ScriptStep]:
        script = [ScriptStep(RING_AT, StatusEvent(CallState.RINGING, call_sid))]
        if to_number.endswith("0002"):
            script.append(
                ScriptStep(OUTCOME_AT, StatusEvent(CallState.BUSY, call_sid, 0, "486 Busy Here"))
            )
        elif to_number.endswith("0003"):
            script.append(
                ScriptStep(OUTCOME_AT, StatusEvent(CallState.NO_ANSWER, call_sid, 0, "no answer"))
            )
        elif to_number.endswith("0009"):
            talk = min(MACHINE_RECORDS_SECONDS, time_limit_seconds)
            answered = StatusEvent(CallState.IN_PROGRESS, call_sid)
            machine = AnsweredBy.MACHINE
            script += [
                ScriptStep(ANSWER_AT, answered),
                ScriptStep(
                    DETECTED_AT,
                    answered,
                    DetectionEvent(machine, raw={"greeting": MACHINE_GREETING}),
                ),
                ScriptStep(
                    BEEP_AT, answered, DetectionEvent(machine, True, raw={"beep": "detected"})
                ),
                ScriptStep(
                    ANSWER_AT + talk,
                    StatusEvent(
                        CallState.COMPLETED, call_sid, talk, reason="the answering machine hung up"
                    ),
                ),
            ]
        else:
            talk = self.talk_seconds(call_sid, time_limit_seconds)
            answered = StatusEvent(CallState.IN_PROGRESS, call_sid)
            script += [
                ScriptStep(ANSWER_AT, answered),
                ScriptStep(DETECTED_AT, answered, DetectionEvent(AnsweredBy.HUMAN)),
                ScriptStep(
                    ANSWER_AT + talk,
                    StatusEvent(CallState.COMPLETED, call_sid, talk, reason="callee hung up"),
                ),
            ]
        # In time order: a verdict after a short call's end is never played.
        return sorted(script, key=lambda step: step.at_seconds)

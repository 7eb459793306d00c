"""Placing calls and moving them through their lifecycle. There is one way to place a call:
`call_initiate`, used by the API, the admin and the management commands alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce, NullIf
from django.urls import reverse
from django.utils import timezone

from assistants.models import Assistant, ConversationFlow
from billing.services import (
    balance_hold_call,
    balance_release,
    balance_settle,
    cost_cents,
)
from burki.db import connection_release
from burki.models import Organization
from burki.pacing import Pace, PacingUnavailable, pace_reserve
from calls import tasks
from calls.do_not_call import do_not_call_check
from calls.errors import (
    AssistantInactive,
    CallNotConfirmed,
    CallNotInProgress,
    CallsPerSecondExceeded,
    HangUpFailed,
    IdempotencyKeyInFlight,
    MachineDetectionUnsupported,
    NoAssistantFound,
    NumberOnDoNotCallList,
    ProviderFailed,
    ProviderTimedOut,
    ProviderUnavailable,
    TooManyConcurrentCalls,
    TransferFailed,
    TransferUnsupported,
    VoicemailMessageTooLong,
)
from calls.events import ANSWERED_BY, ENDED, STATUS_CHANGED, TRANSFERRED, call_event_record
from calls.models import LIVE_STATES, Call, CallEvent, IdempotencyKey, Settlement
from calls.selectors import calls_in_progress
from calls.templating import Scalar, render
from telephony.models import PhoneNumber, ProviderAccount, provider_credentials
from telephony.providers import get_provider
from telephony.providers.base import (
    CallContext,
    CallRecordQuery,
    DetectionEvent,
    MachineDetection,
    OutboundCall,
    PlacedCallQuery,
    Provider,
    ProviderError,
    ScriptStep,
    StatusEvent,
    WebhookAnswer,
)
from telephony.states import FINAL_STATES, AnsweredBy, CallState, OnMachine, states_before

logger = logging.getLogger(__name__)


# The longest voicemail message, variables filled in, that every provider's text-to-speech
# takes (Vonage's talk action: 1500 characters); the request's own text is at most 1000.
MAX_RENDERED_VOICEMAIL_MESSAGE = 1500


@dataclass(frozen=True)
class Voicemail:
    """Answering-machine detection for one call (POST /calls/initiate's `voicemail`, or a
    campaign's settings): what to do when a machine answers, and the message to leave, whose
    `{{variables}}` are filled in with the call's."""

    on_machine: str  # a telephony.states.OnMachine value
    message: str = ""  # for OnMachine.LEAVE_MESSAGE

    def __post_init__(self) -> None:
        if self.on_machine not in OnMachine.values:
            raise ValueError(f"on_machine must be one of {', '.join(OnMachine.values)}")
        if (self.on_machine == OnMachine.LEAVE_MESSAGE) != bool(self.message):
            raise ValueError("a message is left with on_machine leave_message, and only then")

    @classmethod
    def from_request(cls, data: Mapping[str, Any] | None) -> Voicemail | None:
        """From the validated request field (calls.serializers.VoicemailSerializer)."""
        if not data or not data.get("detect", True):
            return None
        return cls(on_machine=str(data["on_machine"]), message=str(data.get("message") or ""))


@dataclass(frozen=True)
class Resolution:
    assistant: Assistant
    conversation_flow: ConversationFlow | None


def call_resolve_assistant(
    *, phone_number: PhoneNumber, assistant_override: Assistant | None
) -> Resolution:
    """The documented order: the requested assistant, the number's live flow, the number's own."""
    if assistant_override is not None:
        if not assistant_override.is_active:
            raise AssistantInactive(assistant_override.pk)
        return Resolution(assistant_override, None)
    flow = phone_number.conversation_flow
    if flow is not None and flow.is_live and flow.base_assistant.is_active:
        return Resolution(flow.base_assistant, flow)
    assistant = phone_number.assistant
    if assistant is not None and assistant.is_active:
        return Resolution(assistant, None)
    raise NoAssistantFound(str(phone_number.number))


def _webhook_url(name: str, call_id: UUID) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name, kwargs={"call_id": call_id})


def call_context(call: Call) -> CallContext:
    return CallContext(
        call_id=str(call.pk),
        assistant_id=call.assistant_id or 0,
        conversation_flow_id=call.conversation_flow_id,
        welcome_message=call.welcome_message,
        agenda=call.agenda,
    )


def call_initiate(
    *,
    organization: Organization,
    phone_number: PhoneNumber,
    to_number: str,
    assistant_override: Assistant | None = None,
    welcome_message: str | None = None,
    agenda: str | None = None,
    variables: Mapping[str, Scalar] | None = None,
    metadata: Mapping[str, Scalar | None] | None = None,
    voicemail: Voicemail | None = None,
    idempotency_claim: IdempotencyKey | None = None,
    paced: bool = True,
) -> Call:
    """Hold the money, record the call, then ask the provider to dial.

    `phone_number` and `assistant_override` must already be known to be the organization's
    (calls.permissions judges them). `idempotency_claim`, the request's claim on its
    Idempotency-Key, is linked to the call in the same transaction that records it, and only if
    it is still this request's: a request whose key was taken over records and dials nothing.

    Before anything is recorded or held: a number on the organization's do-not-call list is
    refused, and the provider account's calls a second are kept (waiting for a slot up to
    CALL_PACING_MAX_WAIT_SECONDS, else CallsPerSecondExceeded). `paced=False`: the caller has
    reserved the account's slot itself (a campaign, with its own pace in the same reservation).
    """
    do_not_call_check(organization_id=organization.pk, number=to_number)
    variables = dict(variables or {})
    resolution = call_resolve_assistant(
        phone_number=phone_number, assistant_override=assistant_override
    )
    assistant = resolution.assistant
    rendered_welcome = render(
        assistant.welcome_message if welcome_message is None else welcome_message,
        variables,
        field="welcome_message",
    )
    rendered_agenda = render(agenda or "", variables, field="agenda")
    rate = organization.effective_rate_cents_per_minute
    provider = get_provider(phone_number.provider)
    detection = _call_voicemail_settings(voicemail, variables, provider)
    if paced:  # last: a request refused for what it asks takes no slot
        call_pace(provider_account=phone_number.provider_account)

    max_seconds = assistant.max_call_duration_seconds
    # One short transaction. The call is written first and the money held last, so the
    # organization's Balance row (locked by the hold) is held only until the commit: calls of one
    # organization queue on that lock, and nothing but the commit may run under it.
    now = timezone.now()
    # Ring time, then the call itself, then a minute for the provider's own rounding.
    slack = timedelta(seconds=settings.CALL_RING_TIMEOUT_SECONDS + 60)
    with transaction.atomic():
        call = Call.objects.create(
            organization=organization,
            phone_number=phone_number,
            provider_account=phone_number.provider_account,
            from_number=str(phone_number.number),
            to_number=to_number,
            assistant=assistant,
            conversation_flow=resolution.conversation_flow,
            provider=phone_number.provider,
            welcome_message=rendered_welcome,
            agenda=rendered_agenda,
            variables=variables,
            metadata=dict(metadata or {}),
            voicemail=detection,
            time_limit_seconds=max_seconds,
            rate_cents_per_minute=rate,
            hold_cents=cost_cents(seconds=max_seconds, rate_cents_per_minute=rate),
            live_until=now + timedelta(seconds=max_seconds) + slack,
        )
        if idempotency_claim is not None:
            # Fenced on the claim's time: a retry that took the key over (this request looked
            # dead, past IDEMPOTENCY_STALE_SECONDS) owns it now, and this one must neither
            # record a call nor dial.
            linked = IdempotencyKey.objects.filter(
                pk=idempotency_claim.pk,
                created_at=idempotency_claim.created_at,
                call__isnull=True,
            ).update(call=call)
            if not linked:
                raise IdempotencyKeyInFlight()
        limit = organization.effective_max_concurrent_calls

        def check_room() -> None:
            # Asked under the Balance row lock, which every initiation of this organization
            # takes, in a new statement (a new snapshot): it sees every call committed before,
            # plus this one.
            if calls_in_progress(organization_id=organization.pk, up_to=limit + 1) > limit:
                raise TooManyConcurrentCalls(limit)

        quote = balance_hold_call(
            organization_id=organization.pk,
            call_id=call.pk,
            rate_cents_per_minute=rate,
            max_seconds=max_seconds,
            max_open_holds=limit,
            check_room=check_room,
        )
        if (quote.time_limit_seconds, quote.hold_cents) != (
            call.time_limit_seconds,
            call.hold_cents,
        ):
            # Less money than the longest call costs: the call lasts what the money pays for.
            call.time_limit_seconds, call.hold_cents = quote.time_limit_seconds, quote.hold_cents
            call.live_until = now + timedelta(seconds=quote.time_limit_seconds) + slack
            Call.objects.filter(pk=call.pk).update(
                time_limit_seconds=call.time_limit_seconds,
                hold_cents=call.hold_cents,
                live_until=call.live_until,
            )
        call_event_record(call=call, event_type=STATUS_CHANGED)

    # The provider is asked only after the commit: never inside a transaction or a row lock.
    outbound = OutboundCall(
        from_number=call.from_number,
        to_number=to_number,
        time_limit_seconds=quote.time_limit_seconds,
        ring_timeout_seconds=settings.CALL_RING_TIMEOUT_SECONDS,
        answer_url=_webhook_url("calls:webhook-answer", call.pk),
        status_url=_webhook_url("calls:webhook-status", call.pk),
        media_stream_url=settings.MEDIA_STREAM_URL,
        context=call_context(call),
        machine_detection=None if detection is None else MachineDetection(detection["on_machine"]),
    )
    account = provider_credentials(phone_number.provider_account)
    connection_release()  # to the pool, while the provider answers
    try:
        call_sid = provider.place_call(outbound, account)
    except ProviderError as exc:
        if exc.timeout:
            # Unknown, not failed: the provider may have placed it after we stopped waiting.
            if not call_mark_unknown(call=call, error=str(exc)):
                logger.warning("call %s placed despite %s: %s", call.pk, provider.name, exc)
                call.refresh_from_db()
                return call
            raise ProviderTimedOut(call.pk) from exc
        if not call_fail(call=call, error=str(exc)):
            # The provider's own events moved the call on while its API answered with an
            # error: the call exists, so it is answered as placed, not failed.
            logger.warning("call %s placed despite %s: %s", call.pk, provider.name, exc)
            call.refresh_from_db()
            return call
        if exc.unavailable:
            raise ProviderUnavailable(str(exc)) from exc
        raise ProviderFailed(str(exc)) from exc
    except Exception as exc:
        # An SDK bug or a surprise from the provider: the hold must still come back.
        logger.exception("placing call %s with %s failed unexpectedly", call.pk, provider.name)
        if not call_fail(call=call, error=f"Unexpected error from {provider.label}."):
            call.refresh_from_db()
            return call
        raise ProviderFailed() from exc

    now = timezone.now()
    with transaction.atomic():
        claimed = Call.objects.filter(pk=call.pk, status=CallState.QUEUED).update(
            call_sid=call_sid, status=CallState.INITIATED, initiated_at=now, updated_at=now
        )
        if claimed:
            call_event_record(call=call, event_type=STATUS_CHANGED)
    if not claimed:
        # A fast provider's first webhook moved the call on already: keep its state.
        Call.objects.filter(pk=call.pk).update(
            call_sid=call_sid, initiated_at=Coalesce(F("initiated_at"), Value(now)), updated_at=now
        )
        call.refresh_from_db()
        return call
    call.call_sid = call_sid
    call.status = CallState.INITIATED
    call.initiated_at = now
    if provider.simulates_calls:
        transaction.on_commit(lambda: _call_play_from(call=call, provider=provider, step=0))
    return call


def _call_voicemail_settings(
    voicemail: Voicemail | None, variables: Mapping[str, Scalar], provider: Provider
) -> dict[str, str] | None:
    """What the call records of its `voicemail` (the message rendered), checked against what
    its provider can do: nothing is recorded or dialled for a request it cannot honour."""
    if voicemail is None:
        return None
    if not provider.can_detect_machines:
        raise MachineDetectionUnsupported(provider.label)
    message = render(voicemail.message, variables, field="voicemail.message")
    if len(message) > MAX_RENDERED_VOICEMAIL_MESSAGE:
        raise VoicemailMessageTooLong(MAX_RENDERED_VOICEMAIL_MESSAGE)
    return {"on_machine": voicemail.on_machine, "message": message}


def provider_account_pace(provider_account: ProviderAccount | None) -> Pace | None:
    """The shared pace of dialling through an account (None: its carrier is not paced)."""
    if provider_account is None:
        return None
    rate = provider_account.effective_calls_per_second
    if rate is None:
        return None
    return Pace(key=f"provider-account:{provider_account.pk}", calls_per_second=rate)


def call_pace(*, provider_account: ProviderAccount | None) -> None:
    """Wait for the account's next slot, up to CALL_PACING_MAX_WAIT_SECONDS; else
    CallsPerSecondExceeded (429). A pace that cannot be read lets the call through, as the
    rate limits do: the carrier's own limit is still there behind it."""
    pace = provider_account_pace(provider_account)
    if pace is None:
        return
    try:
        reservation = pace_reserve([pace], max_wait=settings.CALL_PACING_MAX_WAIT_SECONDS)
    except PacingUnavailable as exc:
        logger.warning("calls a second not enforced: the cache cannot be reached (%s)", exc)
        return
    if not reservation.granted:
        raise CallsPerSecondExceeded(
            f"{pace.calls_per_second.normalize():f}", reservation.wait_seconds
        )
    if reservation.wait_seconds > 0:
        connection_release()  # to the pool, while the slot comes
        time.sleep(reservation.wait_seconds)


def call_initiated_body(call: Call) -> dict[str, str]:
    """The contract's 200 body for a placed call (plus our own call_id)."""
    return {
        "message": "Call initiated successfully",
        "call_sid": call.call_sid,
        "call_id": str(call.pk),
    }


# Recorded, and either not yet asked of the provider or not known to be placed by it.
UNPLACED_STATES = [CallState.QUEUED, CallState.UNKNOWN]


def call_mark_unknown(*, call: Call, error: str) -> bool:
    """The provider did not answer in time: it may have placed the call. Keep the call and its
    hold; its first webhook adopts it, and reconcile and the sweep ask the provider."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Call.objects.filter(pk=call.pk, status=CallState.QUEUED).update(
            status=CallState.UNKNOWN, error=error[:1000], updated_at=now
        )
        if claimed:
            call_event_record(call=call, event_type=STATUS_CHANGED)
    if claimed:
        call.status, call.error = CallState.UNKNOWN, error[:1000]
    return bool(claimed)


def call_fail(*, call: Call, error: str, settled_by: str = Settlement.PROVIDER) -> bool:
    """A call the provider never placed: mark it failed and give the whole hold back.
    `settled_by` is the provider (it refused, or said it placed nothing) unless we only
    assumed so (ESTIMATE)."""
    with transaction.atomic():
        claimed = Call.objects.filter(pk=call.pk, status__in=UNPLACED_STATES).update(
            status=CallState.FAILED,
            error=error[:1000],
            cost_cents=0,
            settled_by=settled_by,
            ended_at=timezone.now(),
            updated_at=timezone.now(),
        )
        if claimed:
            balance_release(
                organization_id=call.organization_id, call_id=call.pk, held_cents=call.hold_cents
            )
            call_event_record(call=call, event_type=STATUS_CHANGED)
            call_event_record(call=call, event_type=ENDED)
    if claimed:
        call.status = CallState.FAILED
        call.error = error[:1000]
        call.cost_cents = 0
    return bool(claimed)


def call_apply_event(
    *,
    call: Call,
    event: StatusEvent,
    source: str,
    settled_by: str = Settlement.WEBHOOK,
    defer_settlement: bool = False,
) -> bool:
    """Move a call forward by one provider event, settling the money when it ends (on the
    event's figures; `settled_by` says what they are).

    With `defer_settlement` (a webhook from a provider we can ask), the end is recorded with
    the figures the event reports, but the hold stays until the provider's own record is
    fetched (`call_settle_from_record`, on the worker): a webhook signed with credentials the
    organization owns cannot set its own bill.

    Claimed, not assumed: the row changes only if it is still in an earlier state, so a repeated
    or late event changes nothing and a finished call is never charged twice. One exception: a
    call that ended answered but whose talk time waits on its answer (a provider that reports no
    duration, whose hangup came before its answer) is settled when the late answer arrives.
    """
    target = CallState(event.state)
    now = timezone.now()
    # A call whose placing we never heard the end of (queued by a dead request, unknown after
    # a time-out) is adopted by its first event: the provider's id, and when it had it.
    updates: dict[str, object] = {
        "status": target,
        "updated_at": now,
        "initiated_at": Coalesce(F("initiated_at"), Value(now)),
    }
    adopting = bool(event.provider_call_id) and not call.call_sid
    if event.provider_call_id:
        updates["call_sid"] = Coalesce(
            NullIf(F("call_sid"), Value("")), Value(event.provider_call_id)
        )
    if target == CallState.IN_PROGRESS:
        updates["answered_at"] = event.occurred_at or now
    ended_at = event.occurred_at or now
    # The talk time is measured from the answer, which we have not heard of (yet).
    measured = target == CallState.COMPLETED and event.duration_seconds is None
    awaiting_answer = measured and call.answered_at is None
    duration = charge = 0
    if target in FINAL_STATES:
        # An end we brought about (a machine hung up on, a message left) keeps our reason.
        reason = Coalesce(NullIf(F("end_reason"), Value("")), Value(event.reason[:200]))
        updates.update(ended_at=ended_at, end_reason=reason)
        if defer_settlement:
            if not awaiting_answer:  # what the event reports, kept until the record is read
                reported = event.duration_seconds or 0
                if measured:
                    reported = _talk_seconds(call.answered_at, ended_at)
                updates["duration_seconds"] = min(reported, call.time_limit_seconds)
        elif not awaiting_answer:
            if target == CallState.COMPLETED:
                duration = event.duration_seconds or 0
                if measured:
                    duration = _talk_seconds(call.answered_at, ended_at)
            duration, charge = _duration_and_charge(call, duration)
            updates.update(duration_seconds=duration, cost_cents=charge, settled_by=settled_by)

    with transaction.atomic():
        try:
            # Adopting the provider's id may meet the one another of our calls has (a made-up
            # event, checked for by the webhook, but not under a lock): a savepoint then.
            with transaction.atomic() if adopting else nullcontext():
                claimed = Call.objects.filter(pk=call.pk, status__in=states_before(target)).update(
                    **updates
                )
        except IntegrityError:
            logger.warning(
                "call %s: provider id %s is another call's", call.pk, event.provider_call_id
            )
            return False
        if not claimed:
            if target == CallState.IN_PROGRESS:
                return _call_settle_on_late_answer(
                    call=call,
                    event=event,
                    answered_at=ended_at,
                    source=source,
                    defer_settlement=defer_settlement,
                )
            return False
        CallEvent.objects.create(
            call_id=call.pk, status=target, source=source, detail=dict(event.raw)
        )
        call_event_record(call=call, event_type=STATUS_CHANGED)
        if defer_settlement and target in FINAL_STATES:
            transaction.on_commit(lambda: call_settle_later(call_id=call.pk, attempt=0))
            call.status = target
            return True
        if awaiting_answer:
            # Our copy of the call may predate its answer, applied since we read it; the row is
            # ours (locked by the claim) until the commit.
            answered_at = (
                Call.objects.filter(pk=call.pk).values_list("answered_at", flat=True).get()
            )
            if answered_at is None:
                # Settled when the answer arrives, or by the sweep if it never does.
                call.status = target
                return True
            duration, charge = _duration_and_charge(call, _talk_seconds(answered_at, ended_at))
            Call.objects.filter(pk=call.pk).update(
                duration_seconds=duration, cost_cents=charge, settled_by=settled_by
            )
        if target in FINAL_STATES:
            balance_settle(
                organization_id=call.organization_id,
                call_id=call.pk,
                held_cents=call.hold_cents,
                charge_cents=charge,
            )
            call_event_record(call=call, event_type=ENDED)
    call.status = target
    if target in FINAL_STATES:
        call.duration_seconds, call.cost_cents = duration, charge
    return True


def _talk_seconds(answered_at: datetime | None, ended_at: datetime) -> int:
    if answered_at is None:
        return 0
    return max(0, int((ended_at - answered_at).total_seconds()))


def _duration_and_charge(call: Call, seconds: int) -> tuple[int, int]:
    """The billed seconds (never past the time limit) and their cost (never past the hold)."""
    duration = min(seconds, call.time_limit_seconds)
    charge = cost_cents(seconds=duration, rate_cents_per_minute=call.rate_cents_per_minute)
    return duration, min(charge, call.hold_cents)


def _call_settle_on_late_answer(
    *,
    call: Call,
    event: StatusEvent,
    answered_at: datetime,
    source: str,
    defer_settlement: bool,
) -> bool:
    """The answer of a call that has already ended, answered, waiting for it to be measured."""
    filled = Call.objects.filter(
        pk=call.pk,
        status=CallState.COMPLETED,
        answered_at__isnull=True,
        cost_cents__isnull=True,
    ).update(answered_at=answered_at)
    if not filled:
        return False  # a repeated or late event, as any other
    CallEvent.objects.create(
        call_id=call.pk,
        status=CallState.IN_PROGRESS,
        source=source,
        detail={**event.raw, "arrived_after_the_end": True},
    )
    if defer_settlement:
        transaction.on_commit(lambda: call_settle_later(call_id=call.pk, attempt=0))
        return True
    row = Call.objects.get(pk=call.pk)
    assert row.ended_at is not None  # it ended: that is what it was waiting in
    _call_settle_pending(
        call=row,
        seconds=_talk_seconds(answered_at, row.ended_at),
        settled_by=Settlement.WEBHOOK,
    )
    call.duration_seconds, call.cost_cents = row.duration_seconds, row.cost_cents
    return True


# How long the worker waits before asking the provider for a call's record again: the record
# can lag the webhook by a moment. After the last, the sweep takes the call up.
SETTLE_RETRY_SECONDS = (5, 30, 120, 600)


def call_settle_later(*, call_id: UUID, attempt: int) -> None:
    """Have the worker settle an ended call from its provider's record."""
    wait = 0 if attempt == 0 else SETTLE_RETRY_SECONDS[attempt - 1]
    try:
        tasks.call_settle.apply_async((str(call_id), attempt), countdown=wait, retry=False)
    except Exception:
        # The sweep settles it: the webhook's answer must not wait on a broker that is down.
        logger.exception("could not schedule the settlement of call %s", call_id)


def call_settle_from_record(*, call_id: UUID) -> bool:
    """Settle a call whose end a webhook reported, on its provider's own record of the call.

    Returns False when the record cannot settle it yet: the provider cannot be asked, or says
    the call is not over (an early or forged end: the hold stays), or its record has no talk
    time and the answer it is measured from has not been heard of. The worker then asks again
    later (SETTLE_RETRY_SECONDS), and after that the sweep.
    """
    try:
        call = Call.objects.select_related("provider_account").get(pk=call_id)
    except Call.DoesNotExist:
        return True
    if call.cost_cents is not None or not call.is_final:
        return True
    provider = get_provider(call.provider)
    if not (provider.can_fetch_calls and call.call_sid and call.initiated_at):
        return False
    try:
        record = provider.fetch_call(
            _call_record_query(call), provider_credentials(call.provider_account)
        )
    except ProviderError as exc:
        logger.warning("settling call %s: %s could not be asked: %s", call.pk, provider.name, exc)
        return False
    if record is None or CallState(record.state) not in FINAL_STATES:
        logger.warning(
            "settling call %s: ended by its webhook, but %s's record says %s",
            call.pk,
            provider.name,
            record.state if record else "nothing",
        )
        return False
    if CallState(record.state) != CallState.COMPLETED:
        seconds = 0
    elif record.duration_seconds is not None:
        seconds = record.duration_seconds
    elif call.answered_at is not None:
        seconds = _talk_seconds(
            call.answered_at, record.occurred_at or call.ended_at or timezone.now()
        )
    else:
        return False  # measured from an answer we have not heard of yet
    # Whether this settles it or another worker did a moment before, it is settled.
    _call_settle_pending(
        call=call, seconds=seconds, settled_by=Settlement.PROVIDER, status=record.state
    )
    return True


def _call_settle_pending(
    *, call: Call, seconds: int, settled_by: str, status: str | None = None, reason: str = ""
) -> bool:
    """Settle an ended call whose money waited (claimed: only if it is still unsettled)."""
    duration, charge = _duration_and_charge(call, seconds)
    updates: dict[str, object] = {
        "duration_seconds": duration,
        "cost_cents": charge,
        "settled_by": settled_by,
        "updated_at": timezone.now(),
    }
    if status is not None:
        updates["status"] = status  # the provider's word on how it ended
    if reason:
        updates["end_reason"] = reason
    with transaction.atomic():
        claimed = Call.objects.filter(pk=call.pk, cost_cents__isnull=True).update(**updates)
        if claimed:
            balance_settle(
                organization_id=call.organization_id,
                call_id=call.pk,
                held_cents=call.hold_cents,
                charge_cents=charge,
            )
            if status is not None and status != call.status:
                call_event_record(call=call, event_type=STATUS_CHANGED)
            call_event_record(call=call, event_type=ENDED)
    if claimed:
        call.duration_seconds, call.cost_cents, call.settled_by = duration, charge, settled_by
    return bool(claimed)


def _call_script(call: Call, provider: Provider) -> list[ScriptStep]:
    return provider.call_script(
        call_sid=call.call_sid, to_number=call.to_number, time_limit_seconds=call.time_limit_seconds
    )


def _call_play_from(*, call: Call, provider: Provider, step: int) -> None:
    """Have the worker play step `step` of a simulated call's script when it is due."""
    script = _call_script(call, provider)
    if step >= len(script):
        return
    assert call.initiated_at is not None  # a call is scripted once it is placed
    played_at = script[step].at_seconds / settings.SANDBOX_TIME_SCALE
    wait = (call.initiated_at + timedelta(seconds=played_at) - timezone.now()).total_seconds()
    try:
        # Not retried here: a lost step is taken up by the sweep, while a caller must not wait
        # on a broker that is down.
        tasks.call_play_simulated.apply_async(
            (str(call.pk), step), countdown=max(0.0, wait), retry=False
        )
    except Exception:
        logger.exception("could not schedule step %d of simulated call %s", step, call.pk)


def call_play_simulated(*, call_id: UUID, step: int) -> None:
    """Apply step `step` of a simulated call's script (telephony.providers.sandbox) as its
    provider's webhook would, stamped on the call's own clock, then schedule the next one."""
    try:
        call = Call.objects.get(pk=call_id)
    except Call.DoesNotExist:
        return
    if call.is_final or call.initiated_at is None:
        return
    provider = get_provider(call.provider)
    if not provider.simulates_calls:
        return
    script = _call_script(call, provider)
    if step >= len(script):
        return
    at = call.initiated_at + timedelta(seconds=script[step].at_seconds)
    detection = script[step].detection
    if detection is not None:
        if call.voicemail is not None:  # told only to a call that asked
            call_apply_detection(call=call, event=detection, source=provider.name)
    else:
        call_apply_event(
            call=call,
            event=replace(script[step].event, occurred_at=at),
            source=provider.name,
            settled_by=Settlement.PROVIDER,  # the script is the sandbox's own record
        )
    _call_play_from(call=call, provider=provider, step=step + 1)


@dataclass
class ReconcileReport:
    failed: int = 0
    adopted: int = 0
    left: int = 0  # the provider could not be asked now: tried again on the next run


def _call_adopt(*, call: Call, event: StatusEvent, source: str) -> bool:
    """Take the provider's call as ours: the request died before it could record the id."""
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = Call.objects.filter(
                pk=call.pk, status__in=UNPLACED_STATES, call_sid=""
            ).update(
                call_sid=event.provider_call_id,
                status=CallState.INITIATED,
                initiated_at=now,
                updated_at=now,
            )
            if claimed:
                CallEvent.objects.create(
                    call_id=call.pk,
                    status=CallState.INITIATED,
                    source="reconcile",
                    detail={"adopted": event.provider_call_id},
                )
                call_event_record(call=call, event_type=STATUS_CHANGED)
    except IntegrityError:
        return False  # another of our calls holds that id after all
    if not claimed:
        return False
    call.call_sid, call.status, call.initiated_at = (
        event.provider_call_id,
        CallState.INITIATED,
        now,
    )
    if CallState(event.state) != CallState.INITIATED:
        call_apply_event(call=call, event=event, source=source, settled_by=Settlement.PROVIDER)
    return True


def call_reconcile_stale(*, grace_seconds: int | None = None) -> ReconcileReport:
    """Settle calls whose request never learned whether the provider placed them: left `queued`
    by a request that died (a killed worker, a crash, a deploy), or `unknown` after the provider
    did not answer in time.

    Such a call older than the grace period is looked up at its provider: if the provider
    placed it, we adopt the provider's call (its webhooks then settle the money as usual);
    if it did not, the call is marked failed and its hold released. A provider's call is adopted
    only when it is provably ours: here, the one call between the same numbers that the provider
    created while our request waited for it, with no other call of ours made on those numbers
    then. Anything less certain waits for the call's own webhook (our call id is in its URL) or
    the sweep's rule. A queued call of a provider that offers no lookup is failed and released,
    its error saying it was not verified; an unknown one waits for its webhook or the sweep.
    While the provider cannot be asked, a queued call waits for the next run, but never past its
    time limit: by then any real call has ended and the hold comes back.
    """
    grace = settings.CALL_RECONCILE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    now = timezone.now()
    report = ReconcileReport()
    stale = (
        Call.objects.select_related("provider_account")
        .filter(status__in=UNPLACED_STATES, created_at__lt=now - timedelta(seconds=grace))
        .order_by("created_at")
    )
    for call in stale.iterator(chunk_size=100):
        try:
            _call_reconcile_one(call=call, now=now, grace=grace, report=report)
        except Exception:
            # One call that cannot be reconciled (an undecryptable secret, a malformed answer, a
            # bug in a provider's lookup) must not keep every later call from being reconciled:
            # the runs go oldest first.
            logger.exception("reconcile: call %s left for the next run", call.pk)
            report.left += 1
    return report


def _call_reconcile_one(*, call: Call, now: datetime, grace: int, report: ReconcileReport) -> None:
    """One stale queued call: adopted, failed with its hold released, or left for the next run."""
    provider = get_provider(call.provider)
    account = provider_credentials(call.provider_account)
    # Our request can only have made the provider create a call while it waited for the answer.
    waited = timedelta(seconds=settings.PROVIDER_TIMEOUT_SECONDS)
    query = PlacedCallQuery(
        call_id=str(call.pk),
        from_number=call.from_number,
        to_number=call.to_number,
        not_before=call.created_at,
        not_after=call.created_at + waited,
    )
    if not provider.can_find_calls:
        if call.status == CallState.UNKNOWN:
            report.left += 1  # its webhook adopts it, or the sweep's rule settles it
            return
        report.failed += call_fail(
            call=call,
            error=f"The request stopped before {provider.label} answered, and "
            f"{provider.label} cannot be asked whether it placed the call (not verified).",
            settled_by=Settlement.ESTIMATE,
        )
        return
    try:
        candidates = provider.find_calls(query, account)
    except ProviderError as exc:
        over = call.created_at + timedelta(
            seconds=call.time_limit_seconds + settings.CALL_RING_TIMEOUT_SECONDS + grace
        )
        if now < over or call.status == CallState.UNKNOWN:
            logger.warning("reconcile: call %s left for the next run: %s", call.pk, exc)
            report.left += 1
        else:
            report.failed += call_fail(
                call=call,
                error=f"The request stopped before {provider.label} answered, and "
                f"{provider.label} could not be asked before the call's time limit passed.",
                settled_by=Settlement.ESTIMATE,
            )
        return
    known = set(
        Call.objects.filter(
            provider=call.provider,
            call_sid__in=[c.provider_call_id for c in candidates],
        ).values_list("call_sid", flat=True)
    )
    unknown = [c for c in candidates if c.provider_call_id not in known]
    if len(unknown) == 1 and not _others_on_the_same_numbers(call=call, waited=waited):
        if _call_adopt(call=call, event=unknown[0], source=provider.name):
            report.adopted += 1
        else:
            report.left += 1
    elif not unknown:
        report.failed += call_fail(
            call=call,
            error=f"Never placed: the request stopped before {provider.label} placed the call.",
        )
    else:
        report.left += 1


@dataclass
class SweepReport:
    settled: int = 0  # by the provider's own record
    estimated: int = 0  # by the documented rule, the provider never having told
    left: int = 0  # the provider could not tell yet: tried again on the next run


# Placed (or perhaps placed) and not over yet, as far as we have heard (a queued call is
# reconcile's).
SWEPT_STATES = [CallState.UNKNOWN, CallState.INITIATED, CallState.RINGING, CallState.IN_PROGRESS]


def calls_sweep(*, now: datetime | None = None) -> SweepReport:
    """Settle every placed call that should have ended by now but whose end we never heard of
    (a lost final webhook, a SIP agent that was killed): no hold outlives its call.

    A call is taken once it is CALL_SWEEP_GRACE_SECONDS past `live_until` (ring time plus time
    limit plus a minute, after which the provider has ended it). The provider's own record is
    asked for and, if the call has ended there, settles it. A call the provider still cannot
    tell about CALL_SWEEP_GIVE_UP_SECONDS past `live_until` is settled by the rule: answered,
    it is charged its time limit (the most the provider can have let it last); never answered,
    its hold is released. Such calls are `settled_by` "estimate", for an operator to review.

    A SIP call is not waited on so long: its agent stamps it every few seconds, and one not
    stamped for SIP_AGENT_SILENT_SECONDS that no agent carries any more ended when last heard
    (answered, it is charged to then, `settled_by` "agent"; ringing, its hold is released).
    """
    now = now or timezone.now()
    report = SweepReport()
    overdue = (
        Call.objects.select_related("provider_account")
        .filter(
            status__in=SWEPT_STATES,
            live_until__lt=now - timedelta(seconds=settings.CALL_SWEEP_GRACE_SECONDS),
        )
        .order_by("live_until")
    )
    # Ended, by their webhook, with the money still held: waiting for the provider's record,
    # or for the answer their talk time is measured from (call_apply_event). (The record is
    # fetched with the call as call_settle_from_record reads it: no account joined here.)
    unsettled = Call.objects.filter(
        status__in=FINAL_STATES,
        cost_cents__isnull=True,
        ended_at__lt=now - timedelta(seconds=settings.CALL_SWEEP_GRACE_SECONDS),
    ).order_by("ended_at")
    for calls, sweep in (
        (_calls_gone_silent(now), _call_sweep_silent),
        (overdue, _call_sweep_one),
        (unsettled, _call_sweep_unsettled),
    ):
        for call in calls.iterator(chunk_size=100):
            try:
                sweep(call=call, now=now, report=report)
            except Exception:
                # One call that cannot be swept (an undecryptable secret, a provider's
                # surprise) must not keep the calls after it from being settled.
                logger.exception("sweep: call %s left for the next run", call.pk)
                report.left += 1
    return report


def call_heard_from(*, call_ids: list[str], at: datetime) -> int:
    """The carrier of these calls (a SIP agent) says they were up, or being dialled, at `at`."""
    return Call.objects.filter(pk__in=call_ids, status__in=LIVE_STATES).update(last_heard_at=at)


def _calls_gone_silent(now: datetime) -> QuerySet[Call]:
    """Calls whose carrier stamps them (a provider that `reports_liveness`: SIP) not stamped
    for SIP_AGENT_SILENT_SECONDS: their agent stopped without reporting their end."""
    silent_since = now - timedelta(seconds=settings.SIP_AGENT_SILENT_SECONDS)
    return (
        Call.objects.select_related("provider_account")
        .filter(status__in=SWEPT_STATES, last_heard_at__lt=silent_since, initiated_at__isnull=False)
        .exclude(call_sid="")
        .order_by("last_heard_at")
    )


def _call_sweep_silent(*, call: Call, now: datetime, report: SweepReport) -> None:
    """A call whose agent went quiet: if no agent carries it any more (or none can be asked,
    as when the only one was killed), it ended when it was last heard, and is settled so."""
    provider = get_provider(call.provider)
    try:
        record = provider.fetch_call(
            _call_record_query(call), provider_credentials(call.provider_account)
        )
    except ProviderError as exc:
        logger.info("sweep: call %s is silent and its agents cannot be asked: %s", call.pk, exc)
        record = None
    if record is not None:
        report.left += 1  # an agent still carries it: its heartbeat is only late
        return
    assert call.last_heard_at is not None
    heard_at = max(call.last_heard_at, call.answered_at or call.last_heard_at)
    if call.answered_at is not None:
        ended = StatusEvent(
            CallState.COMPLETED,
            duration_seconds=_talk_seconds(call.answered_at, heard_at),
            reason="Its SIP agent stopped mid-call: charged to when it last reported the call up.",
        )
    else:
        ended = StatusEvent(
            CallState.FAILED,
            duration_seconds=0,
            reason="Its SIP agent stopped before the call was answered: its hold was released.",
        )
    ended = replace(ended, occurred_at=heard_at, raw={"found_by": "sweep", "rule": "agent gone"})
    if call_apply_event(call=call, event=ended, source="sweep", settled_by=Settlement.AGENT):
        logger.warning("sweep: call %s settled as its agent left it: %s", call.pk, ended.reason)
        report.settled += 1


def _call_sweep_unsettled(*, call: Call, now: datetime, report: SweepReport) -> None:
    """An ended call whose money still waits: settled from the provider's record if it can be
    had, and once the provider has long failed to give one, on the best figure known."""
    if call_settle_from_record(call_id=call.pk):
        report.settled += 1
        return
    assert call.ended_at is not None
    # An end the organization could have signed itself is waited on until the call can no
    # longer be live either: a forged early end must not outwait a record that says it goes on.
    last_moment = call.ended_at
    if get_provider(call.provider).account_can_forge_webhooks and call.live_until:
        last_moment = max(last_moment, call.live_until)
    if now < last_moment + timedelta(seconds=settings.CALL_SWEEP_GIVE_UP_SECONDS):
        report.left += 1
        return
    if call.duration_seconds is not None:
        # What its webhook reported: the provider never confirmed it, nor said otherwise.
        report.settled += _call_settle_pending(
            call=call, seconds=call.duration_seconds, settled_by=Settlement.WEBHOOK
        )
        return
    # Answered (it ended completed) but its answer was never reported: the most it can have
    # talked is from when the provider accepted it to its end.
    start = call.initiated_at or call.created_at
    report.estimated += _call_settle_pending(
        call=call,
        seconds=_talk_seconds(start, call.ended_at),
        settled_by=Settlement.ESTIMATE,
        reason="Its answer was never reported: charged from when it was placed to its end.",
    )


def _call_record_query(call: Call) -> CallRecordQuery:
    """What a provider is told of a call it placed, to look it up or end it."""
    assert call.call_sid and call.initiated_at is not None  # only a placed call has a record
    return CallRecordQuery(
        call_id=str(call.pk),
        call_sid=call.call_sid,
        to_number=call.to_number,
        time_limit_seconds=call.time_limit_seconds,
        placed_at=call.initiated_at,
        from_number=call.from_number,
    )


def _call_sweep_one(*, call: Call, now: datetime, report: SweepReport) -> None:
    provider = get_provider(call.provider)
    if provider.can_fetch_calls and call.call_sid and call.initiated_at:
        try:
            record = provider.fetch_call(
                _call_record_query(call), provider_credentials(call.provider_account)
            )
        except ProviderError as exc:
            logger.warning(
                "sweep: %s could not be asked about call %s: %s", provider.name, call.pk, exc
            )
            record = None
        if record is not None and CallState(record.state) in FINAL_STATES:
            found = replace(record, raw={**record.raw, "found_by": "sweep"})
            if call_apply_event(
                call=call, event=found, source="sweep", settled_by=Settlement.PROVIDER
            ):
                report.settled += 1
            return
    assert call.live_until is not None  # every call placed since live_until exists has one
    if now < call.live_until + timedelta(seconds=settings.CALL_SWEEP_GIVE_UP_SECONDS):
        report.left += 1
        return
    if call.answered_at is not None:
        rule = StatusEvent(
            CallState.COMPLETED,
            duration_seconds=call.time_limit_seconds,
            reason="Never told how it ended: answered, so charged its time limit.",
        )
    else:
        rule = StatusEvent(
            CallState.FAILED,
            duration_seconds=0,
            reason="Never told how it ended: never answered, so its hold was released.",
        )
    rule = replace(rule, raw={"found_by": "sweep", "rule": "give up"})
    if call_apply_event(call=call, event=rule, source="sweep", settled_by=Settlement.ESTIMATE):
        logger.warning("sweep: call %s settled by the rule: %s", call.pk, rule.reason)
        report.estimated += 1


def _others_on_the_same_numbers(*, call: Call, waited: timedelta) -> bool:
    """Whether another call of ours between the same numbers may have been created at the
    provider while this one's request waited: then a candidate could be either's."""
    return (
        Call.objects.filter(
            provider=call.provider,
            from_number=call.from_number,
            to_number=call.to_number,
            created_at__gte=call.created_at - waited,
            created_at__lte=call.created_at + waited,
        )
        .exclude(pk=call.pk)
        .exists()
    )


def call_hang_up(*, call: Call) -> Call:
    """End a call now through its provider (cancel it while it rings). A call already over is
    left as it is, so asking twice is harmless. The provider's own final event then settles the
    money as for any call; a simulated call's end is applied here, nobody else reporting it.

    Raises CallNotConfirmed for a call its provider has not confirmed (no id to name), and
    HangUpFailed when the provider refuses or cannot be reached.
    """
    if call.is_final:
        return call
    provider = get_provider(call.provider)
    if not provider.can_hang_up or not call.call_sid or call.initiated_at is None:
        raise CallNotConfirmed()
    account = provider_credentials(call.provider_account)
    connection_release()  # to the pool, while the provider answers
    try:
        ended = provider.hang_up(
            _call_record_query(call), account, answered=call.answered_at is not None
        )
    except ProviderError as exc:
        raise HangUpFailed(str(exc)) from exc
    if ended is not None:
        call_apply_event(
            call=call, event=ended, source=provider.name, settled_by=Settlement.PROVIDER
        )
    call.refresh_from_db()
    return call


# --- answering-machine detection ----------------------------------------------------------------

END_MACHINE_HUNG_UP = "Answered by a machine: hung up on detection."
END_FAX_HUNG_UP = "Answered by a fax machine: hung up on detection."
END_MESSAGE_LEFT = "Answered by a machine: the voicemail message was left after the beep."
# CallEvent.source of what we did about a verdict (the verdict's own event is the provider's).
DETECTION_SOURCE = "machine_detection"

MACHINES = (AnsweredBy.MACHINE, AnsweredBy.FAX)


@dataclass(frozen=True)
class _MachineAction:
    name: str  # "", "wait", "hang_up", "leave_message", "end_after_message"
    end_reason: str = ""
    note: str = ""  # what the call's timeline says of it


def _machine_action(call: Call, answered_by: str | None, event: DetectionEvent) -> _MachineAction:
    """What a call that asked for detection does now, given who answered (`answered_by`: the
    verdict as known after `event`)."""
    assert call.voicemail is not None
    on_machine = call.voicemail["on_machine"]
    if answered_by not in MACHINES:
        # A person (or the provider could not tell): the assistant has the call already.
        return _MachineAction("", note="the assistant keeps the call")
    if on_machine == OnMachine.CONTINUE:
        return _MachineAction("", note="the assistant keeps the call (on_machine: continue)")
    if event.message_played:
        return _MachineAction("end_after_message", note="the message was played: hanging up")
    if answered_by == AnsweredBy.FAX:
        return _MachineAction("hang_up", END_FAX_HUNG_UP, "hanging up on the fax machine")
    if on_machine == OnMachine.HANGUP:
        return _MachineAction("hang_up", END_MACHINE_HUNG_UP, "hanging up on the machine")
    if event.greeting_ended:
        return _MachineAction(
            "leave_message", END_MESSAGE_LEFT, "the greeting ended: leaving the message"
        )
    return _MachineAction("wait", note="waiting for the end of the machine's greeting")


def call_apply_detection(*, call: Call, event: DetectionEvent, source: str) -> str:
    """Record who answered (once: the first verdict stands) and act on it as the call's
    `voicemail` says: hang up on a machine, or wait for its greeting to end and leave the
    message, or leave the call to the assistant. Returns what was done, in a sentence.

    Claimed, not assumed: the verdict is written only while the call has none, and an action
    that ends the call is claimed by writing its `end_reason` on the live call, so a repeated
    event does nothing twice. The provider is asked after the commit.
    """
    if call.voicemail is None:
        return "Ignored: the call did not ask for machine detection."
    if call.is_final:
        return "Ignored: the call is over."
    new_verdict = call.answered_by is None and bool(event.answered_by)
    answered_by = call.answered_by or event.answered_by or None
    action = _machine_action(call, answered_by, event)
    if action.end_reason and call.end_reason:
        action = _MachineAction("", note="already acted on")
    if not (new_verdict or action.end_reason or action.name == "end_after_message"):
        return "Ignored: already applied."  # a repeated verdict, or one that changes nothing
    updates: dict[str, object] = {"updated_at": timezone.now()}
    claim = Call.objects.filter(pk=call.pk)
    if new_verdict:
        updates["answered_by"] = event.answered_by
        claim = claim.filter(answered_by__isnull=True)
    if action.end_reason:
        updates["end_reason"] = action.end_reason
        claim = claim.filter(end_reason="", status__in=LIVE_STATES)
    if new_verdict or action.end_reason:
        with transaction.atomic():
            if not claim.update(**updates):
                return "Ignored: already applied."
            detail = {**event.raw, "action": action.note}
            if new_verdict:
                detail["answered_by"] = event.answered_by
            if action.name == "leave_message":
                detail["message"] = call.voicemail["message"]
            CallEvent.objects.create(
                call_id=call.pk,
                status=call.status,
                source=source if new_verdict else DETECTION_SOURCE,
                detail=detail,
            )
            if new_verdict:
                call_event_record(call=call, event_type=ANSWERED_BY)
        call.answered_by = answered_by
        if action.end_reason:
            call.end_reason = action.end_reason
    if action.name in ("hang_up", "leave_message", "end_after_message"):
        _call_act_on_machine(call=call, action=action)
    return f"Applied: {action.note}."


def _call_act_on_machine(*, call: Call, action: _MachineAction) -> None:
    """Have the provider end the call, or leave the message, for a machine that answered. A
    provider that fails gives the claim back (the end reason), for a later event to try."""
    provider = get_provider(call.provider)
    query, account = _call_record_query(call), provider_credentials(call.provider_account)
    connection_release()  # to the pool, while the provider answers
    try:
        if action.name == "leave_message":
            assert call.voicemail is not None
            ended = provider.leave_message(query, account, message=call.voicemail["message"])
        else:
            ended = provider.hang_up(query, account, answered=True)
    except ProviderError as exc:
        logger.warning("call %s: %s could not act on a machine: %s", call.pk, provider.name, exc)
        with transaction.atomic():
            if action.end_reason:
                Call.objects.filter(
                    pk=call.pk, end_reason=action.end_reason, status__in=LIVE_STATES
                ).update(end_reason="", updated_at=timezone.now())
            CallEvent.objects.create(
                call_id=call.pk,
                status=call.status,
                source=DETECTION_SOURCE,
                detail={"action": action.note, "error": str(exc)[:500]},
            )
        return
    if ended is not None:
        call_apply_event(
            call=call, event=ended, source=provider.name, settled_by=Settlement.PROVIDER
        )


def call_answer_for_machine(*, call: Call, provider: Provider) -> WebhookAnswer | None:
    """The answer webhook of a call whose machine verdict came before the provider asked what
    to do with it: a machine is handed to the assistant only with `on_machine` "continue".
    None: hand the call over as usual."""
    if call.voicemail is None or call.answered_by not in MACHINES:
        return None
    on_machine = call.voicemail["on_machine"]
    if on_machine == OnMachine.CONTINUE:
        return None
    leaves = on_machine == OnMachine.LEAVE_MESSAGE and call.answered_by == AnsweredBy.MACHINE
    reason = END_MESSAGE_LEFT if leaves else END_MACHINE_HUNG_UP
    if call.answered_by == AnsweredBy.FAX:
        reason = END_FAX_HUNG_UP
    with transaction.atomic():
        claimed = Call.objects.filter(pk=call.pk, end_reason="", status__in=LIVE_STATES).update(
            end_reason=reason, updated_at=timezone.now()
        )
        if claimed:
            CallEvent.objects.create(
                call_id=call.pk,
                status=call.status,
                source=DETECTION_SOURCE,
                detail={"action": "answered by a machine: not handed to the assistant"},
            )
    if claimed and leaves:
        return provider.answer_with_message(call.voicemail["message"])
    return provider.answer_with_hangup()


# --- transfer ----------------------------------------------------------------------------------


def call_transfer_target_check(*, call: Call, to_number: str) -> None:
    """The one place a transfer's destination is judged before the provider is asked (the
    number is already E.164). Raises a DomainError to refuse it: NumberOnDoNotCallList."""
    try:
        do_not_call_check(organization_id=call.organization_id, number=to_number)
    except NumberOnDoNotCallList:
        raise NumberOnDoNotCallList(to_number, not_done="the call was not transferred") from None


def call_transfer(*, call: Call, to_number: str) -> Call:
    """Move the callee of a call in progress on to `to_number` (a cold transfer through the
    provider). The call stays one call, billed as one until the provider reports its end.

    Raises TransferUnsupported for a provider that cannot, CallNotInProgress for a call that is
    not in progress, and TransferFailed when the provider refuses or cannot be reached.
    """
    provider = get_provider(call.provider)
    if not provider.can_transfer:
        raise TransferUnsupported(provider.label)
    if call.status != CallState.IN_PROGRESS or not call.call_sid or call.initiated_at is None:
        raise CallNotInProgress(call.status)
    call_transfer_target_check(call=call, to_number=to_number)
    account = provider_credentials(call.provider_account)
    connection_release()  # to the pool, while the provider answers
    try:
        provider.transfer(_call_record_query(call), account, to_number=to_number)
    except ProviderError as exc:
        raise TransferFailed(str(exc)) from exc
    now = timezone.now()
    with transaction.atomic():
        # By id alone: the provider has moved the call on, whatever we heard of it meanwhile.
        Call.objects.filter(pk=call.pk).update(
            transferred_to=to_number, transferred_at=now, updated_at=now
        )
        CallEvent.objects.create(
            call_id=call.pk,
            status=call.status,
            source=provider.name,
            detail={"transferred_to": to_number},
        )
        call_event_record(call=call, event_type=TRANSFERRED)
    call.refresh_from_db()
    return call

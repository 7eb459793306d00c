"""Campaigns: create, fill, start, pause, resume, cancel; and the workers' side, claiming due
recipients and placing each attempt through `call_initiate`.

How a recipient is dialled exactly once per attempt, whatever the number of workers:

1. A worker claims it in one short transaction: `SELECT … FOR UPDATE SKIP LOCKED` over the due
   recipients (a row another worker is claiming is skipped, not waited on), the campaign's
   `in_flight` raised only while it is under the cap (compare-and-set), the recipient moved to
   `dialing` with its attempt number. Nobody else claims a `dialing` recipient.
2. It waits for a slot of the campaign's pace and its provider account's together
   (burki.pacing: one reservation on both, shared by every worker), then places the call with
   `call_initiate`, under an Idempotency-Key made of the recipient and the attempt number. The
   key is linked to the call in the transaction that records the call.
3. A worker killed between 1 and the end of 2 leaves the recipient `dialing`. After
   CAMPAIGN_DIAL_STALE_SECONDS the tick looks at the attempt's key: a call recorded under it
   is adopted (never dialled again); without one, the same attempt is claimed again, and
   dialled under the same key, which the idempotency rules hand over only once its first
   owner is dead (IDEMPOTENCY_STALE_SECONDS).
4. When the attempt's call reaches a final status, the outcome is the provider's (busy,
   no-answer, ...); the campaign's retry rule decides whether the recipient waits for another
   attempt. `in_flight` falls in the same transaction.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from assistants.models import Assistant
from billing.errors import InsufficientBalance
from burki.errors import DomainError
from burki.exceptions import first_error_message
from burki.models import Organization
from burki.pacing import Pace, PacingUnavailable, pace_reserve
from calls.errors import (
    IdempotencyKeyInFlight,
    MachineDetectionUnsupported,
    NumberOnDoNotCallList,
    TooManyConcurrentCalls,
    VoicemailMessageTooLong,
)
from calls.idempotency import (
    Replay,
    idempotency_key_claim,
    idempotency_key_finish,
    request_fingerprint,
)
from calls.models import Call, IdempotencyKey
from calls.services import (
    MAX_RENDERED_VOICEMAIL_MESSAGE,
    Voicemail,
    call_initiate,
    call_resolve_assistant,
    provider_account_pace,
)
from calls.templating import TemplateError, render
from campaigns.errors import CampaignConflict, CampaignInvalid, RecipientsInvalid, RowError
from campaigns.events import COMPLETED, STARTED, campaign_event_record
from campaigns.models import (
    ACTIVE_STATES,
    RETRYABLE,
    WEEKDAYS,
    Attempt,
    Campaign,
    CampaignStatus,
    Outcome,
    Recipient,
    RecipientState,
)
from campaigns.windows import time_zones_for, window_next_open, window_open
from telephony.models import PhoneNumber
from telephony.providers import get_provider
from telephony.selectors import phone_number_get
from telephony.states import FINAL_STATES, AnsweredBy

logger = logging.getLogger(__name__)

MAX_RECIPIENTS_PER_REQUEST = 10_000
MAX_FROM_NUMBERS = 50
MAX_RETRY_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 7 * 86400
# Due recipients looked at in one claim: those outside their window are moved on to its opening.
CLAIM_BATCH = 20


# ---- creating and filling ----------------------------------------------------------------


@dataclass(frozen=True)
class CallingWindow:
    start: Any  # datetime.time
    end: Any
    days: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RetryRule:
    max_attempts: int = 1
    on: list[str] = field(default_factory=list)
    backoff_seconds: list[int] = field(default_factory=list)


def retry_rule_check(rule: RetryRule) -> None:
    if not 1 <= rule.max_attempts <= MAX_RETRY_ATTEMPTS:
        raise CampaignInvalid(f"retry.max_attempts must be between 1 and {MAX_RETRY_ATTEMPTS}")
    for outcome in rule.on:
        if outcome not in RETRYABLE:
            raise CampaignInvalid(f"retry.on may name only: {', '.join(str(o) for o in RETRYABLE)}")
    for seconds in rule.backoff_seconds:
        if not 0 <= seconds <= MAX_BACKOFF_SECONDS:
            raise CampaignInvalid(
                f"retry.backoff_seconds must each be between 0 and {MAX_BACKOFF_SECONDS}"
            )


def window_check(window: CallingWindow) -> None:
    if window.start == window.end:
        raise CampaignInvalid("calling_window.start and end must differ")
    for day in window.days:
        if day not in WEEKDAYS:
            raise CampaignInvalid(f"calling_window.days may hold only: {', '.join(WEEKDAYS)}")


def campaign_create(
    *,
    organization: Organization,
    name: str,
    phone_numbers: list[PhoneNumber],
    assistant: Assistant | None = None,
    welcome_message: str | None = None,
    agenda: str = "",
    metadata: Mapping[str, Any] | None = None,
    calls_per_second: Decimal = Decimal(1),
    max_concurrent_calls: int = 10,
    window: CallingWindow | None = None,
    retry: RetryRule | None = None,
    start_at: datetime | None = None,
    recipients: list[Mapping[str, Any]] | None = None,
    voicemail: Voicemail | None = None,
) -> Campaign:
    """A draft campaign, with its recipients if given (all or nothing: RecipientsInvalid).

    `phone_numbers` and `assistant` must already be known to be the organization's. The assistant
    is resolved now as a call from the first number would resolve it (404 if none would), so a
    list is checked against the greeting it will be called with. With `voicemail`, every number
    must be one whose provider detects answering machines (MachineDetectionUnsupported, as
    `POST /calls/initiate` says it), and each row must supply its message's placeholders."""
    if not phone_numbers:
        raise CampaignInvalid("from_phone_number is required")
    if voicemail is not None:
        for number in phone_numbers:
            provider = get_provider(number.provider)
            if not provider.can_detect_machines:
                raise MachineDetectionUnsupported(provider.label)
    retry = retry or RetryRule()
    retry_rule_check(retry)
    if window is not None:
        window_check(window)
    if not 1 <= max_concurrent_calls <= 10_000:
        raise CampaignInvalid("max_concurrent_calls must be between 1 and 10000")
    if not Decimal("0.01") <= calls_per_second <= Decimal(1000):
        raise CampaignInvalid("calls_per_second must be between 0.01 and 1000")
    call_resolve_assistant(phone_number=phone_numbers[0], assistant_override=assistant)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            organization=organization,
            name=name,
            from_numbers=[str(number.number) for number in phone_numbers],
            assistant=assistant,
            welcome_message=welcome_message,
            agenda=agenda or "",
            metadata=dict(metadata or {}),
            voicemail=campaign_voicemail_settings(voicemail),
            calls_per_second=calls_per_second,
            max_concurrent_calls=max_concurrent_calls,
            window_start=window.start if window else None,
            window_end=window.end if window else None,
            window_days=list(window.days) if window else [],
            retry_max_attempts=retry.max_attempts,
            retry_on=list(retry.on),
            retry_backoff_seconds=list(retry.backoff_seconds),
            start_at=start_at,
        )
        if recipients:
            recipients_add(campaign=campaign, rows=list(enumerate(recipients, start=1)))
    return campaign


def campaign_voicemail_settings(voicemail: Voicemail | None) -> dict[str, Any] | None:
    """What a campaign stores of its `voicemail`: the request's own shape, so each attempt reads
    it back with `Voicemail.from_request` (null: no detection)."""
    if voicemail is None:
        return None
    stored: dict[str, Any] = {"detect": True, "on_machine": voicemail.on_machine}
    if voicemail.message:
        stored["message"] = voicemail.message
    return stored


def _greeting(campaign: Campaign) -> str:
    """The text whose placeholders each row must supply: the campaign's welcome message, or the
    greeting of the assistant its calls will be made with."""
    if campaign.welcome_message is not None:
        return campaign.welcome_message
    number = phone_number_get(number=campaign.from_numbers[0])
    if number is None:
        return ""
    try:
        resolved = call_resolve_assistant(
            phone_number=number, assistant_override=campaign.assistant
        )
    except DomainError:
        return ""
    return resolved.assistant.welcome_message


def recipients_validate(
    *, campaign: Campaign, rows: Iterable[tuple[int, Any]]
) -> tuple[list[Recipient], list[RowError]]:
    """Each row checked as `POST /calls/initiate` checks its body (E.164, variables, metadata,
    a variable for every placeholder), with its line number; numbers already in the campaign
    or twice in the list are bad rows too (they would be called twice)."""
    from campaigns.serializers import RecipientRowSerializer

    greeting, agenda = _greeting(campaign), campaign.agenda
    voicemail = Voicemail.from_request(campaign.voicemail)
    machine_message = voicemail.message if voicemail is not None else ""
    existing = set(Recipient.objects.filter(campaign=campaign).values_list("to_number", flat=True))
    seen: dict[str, int] = {}
    valid: list[Recipient] = []
    errors: list[RowError] = []
    now = timezone.now()
    for line, raw in rows:
        row = RecipientRowSerializer(data=raw)
        if not row.is_valid():
            errors.append(RowError(line, first_error_message(row.errors)))
            continue
        data = row.validated_data
        number, variables = data["to_phone_number"], dict(data.get("variables") or {})
        try:
            render(greeting, variables, field="welcome_message")
            render(agenda, variables, field="agenda")
            left = render(machine_message, variables, field="voicemail.message")
        except TemplateError as exc:
            errors.append(RowError(line, exc.message))
            continue
        if len(left) > MAX_RENDERED_VOICEMAIL_MESSAGE:
            errors.append(
                RowError(line, VoicemailMessageTooLong(MAX_RENDERED_VOICEMAIL_MESSAGE).message)
            )
            continue
        if number in existing:
            errors.append(RowError(line, f"{number} is already a recipient of this campaign"))
            continue
        if number in seen:
            errors.append(RowError(line, f"{number} is also on line {seen[number]}"))
            continue
        seen[number] = line
        valid.append(
            Recipient(
                campaign=campaign,
                position=line,
                to_number=number,
                variables=variables,
                metadata=dict(data.get("metadata") or {}),
                time_zones=",".join(time_zones_for(number)),
                next_attempt_at=now,
            )
        )
    return valid, errors


def recipients_add(*, campaign: Campaign, rows: list[tuple[int, Any]]) -> int:
    """Add recipients, all or nothing: with any bad row, RecipientsInvalid names every bad line
    and nothing is added. Returns how many were added."""
    if campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.CANCELED):
        raise CampaignConflict(f"Recipients cannot be added to a {campaign.status} campaign.")
    if not rows:
        raise CampaignInvalid("recipients must hold at least one recipient")
    if len(rows) > MAX_RECIPIENTS_PER_REQUEST:
        raise CampaignInvalid(
            f"recipients may hold at most {MAX_RECIPIENTS_PER_REQUEST} rows per request"
        )
    offset = (
        Recipient.objects.filter(campaign=campaign)
        .order_by("-position")
        .values_list("position", flat=True)
        .first()
        or 0
    )
    valid, errors = recipients_validate(campaign=campaign, rows=rows)
    if errors:
        raise RecipientsInvalid(errors)
    for recipient in valid:
        recipient.position += offset  # its place after the recipients already there
    with transaction.atomic():
        Recipient.objects.bulk_create(valid, batch_size=1000)
    return len(valid)


def recipient_rows_from_csv(text: str) -> list[tuple[int, Any]]:
    """The rows of a CSV upload with their line numbers (the header is line 1). The header must
    name `to_phone_number`; every other column is a variable of that name (an empty cell: not
    given), except `metadata.<key>` columns, which go to the recipient's metadata."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as exc:
        raise RecipientsInvalid([RowError(1, f"not CSV: {exc}")]) from None
    except StopIteration:
        raise RecipientsInvalid(
            [RowError(1, "the file is empty: a header row is needed")]
        ) from None
    if "to_phone_number" not in header:
        raise RecipientsInvalid([RowError(1, "the header row must name a to_phone_number column")])
    rows: list[tuple[int, Any]] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise RecipientsInvalid([RowError(reader.line_num, f"not CSV: {exc}")]) from None
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(header):
            rows.append((line, {"__cells__": f"has {len(cells)} cells, the header {len(header)}"}))
            continue
        row: dict[str, Any] = {"variables": {}, "metadata": {}}
        for name, cell in zip(header, cells, strict=True):
            if name == "to_phone_number":
                row["to_phone_number"] = cell.strip()
            elif name.startswith("metadata."):
                if cell != "":
                    row["metadata"][name.removeprefix("metadata.")] = cell
            elif cell != "":
                row["variables"][name] = cell
        rows.append((line, row))
    return rows


def recipients_add_csv(*, campaign: Campaign, text: str) -> int:
    rows = recipient_rows_from_csv(text)
    shape_errors = [
        RowError(line, str(row["__cells__"])) for line, row in rows if "__cells__" in row
    ]
    if shape_errors:
        valid_rows = [(line, row) for line, row in rows if "__cells__" not in row]
        _, errors = recipients_validate(campaign=campaign, rows=valid_rows)
        raise RecipientsInvalid(sorted([*shape_errors, *errors], key=lambda e: e.line))
    return recipients_add(campaign=campaign, rows=rows)


# ---- status ------------------------------------------------------------------------------


def _transition(campaign: Campaign, sources: list[str], target: str, **updates: Any) -> bool:
    now = timezone.now()
    claimed = Campaign.objects.filter(pk=campaign.pk, status__in=sources).update(
        status=target, updated_at=now, **updates
    )
    if claimed:
        campaign.refresh_from_db()
    return bool(claimed)


def campaign_start(*, campaign: Campaign) -> Campaign:
    """draft → running (or scheduled, until `start_at`)."""
    if not Recipient.objects.filter(campaign=campaign).exists():
        raise CampaignConflict("A campaign without recipients cannot be started.")
    now = timezone.now()
    with transaction.atomic():
        if campaign.start_at is not None and campaign.start_at > now:
            if not _transition(campaign, [CampaignStatus.DRAFT], CampaignStatus.SCHEDULED):
                raise CampaignConflict(f"A {campaign.status} campaign cannot be started.")
            return campaign
        if not _transition(
            campaign, [CampaignStatus.DRAFT], CampaignStatus.RUNNING, started_at=now
        ):
            raise CampaignConflict(f"A {campaign.status} campaign cannot be started.")
        campaign_event_record(campaign=campaign, event_type=STARTED)
    transaction.on_commit(lambda: campaign_dialers_send(campaign=campaign))
    return campaign


def campaign_pause(*, campaign: Campaign) -> Campaign:
    """No new attempt begins; calls under way go on and their outcomes are recorded."""
    if not _transition(
        campaign, [CampaignStatus.RUNNING, CampaignStatus.SCHEDULED], CampaignStatus.PAUSED
    ):
        raise CampaignConflict(f"A {campaign.status} campaign cannot be paused.")
    return campaign


def campaign_resume(*, campaign: Campaign) -> Campaign:
    now = timezone.now()
    with transaction.atomic():
        if not _transition(campaign, [CampaignStatus.PAUSED], CampaignStatus.RUNNING):
            raise CampaignConflict(f"A {campaign.status} campaign cannot be resumed.")
        if campaign.started_at is None:  # paused while it was scheduled
            Campaign.objects.filter(pk=campaign.pk).update(started_at=now)
            campaign.started_at = now
            campaign_event_record(campaign=campaign, event_type=STARTED)
    transaction.on_commit(lambda: campaign_dialers_send(campaign=campaign))
    return campaign


def campaign_cancel(*, campaign: Campaign) -> Campaign:
    """No attempt begins any more: waiting recipients are canceled; calls under way are not hung
    up, and their outcomes are still recorded."""
    now = timezone.now()
    with transaction.atomic():
        if not _transition(
            campaign,
            [
                CampaignStatus.DRAFT,
                CampaignStatus.SCHEDULED,
                CampaignStatus.RUNNING,
                CampaignStatus.PAUSED,
            ],
            CampaignStatus.CANCELED,
            ended_at=now,
        ):
            raise CampaignConflict(f"A {campaign.status} campaign cannot be canceled.")
        Recipient.objects.filter(
            campaign=campaign, state__in=[RecipientState.QUEUED, RecipientState.RETRY_WAIT]
        ).update(state=RecipientState.CANCELED, outcome=Outcome.CANCELED, updated_at=now)
        campaign_event_record(campaign=campaign, event_type=COMPLETED)
    return campaign


# ---- what the API shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    total: int
    by_state: dict[str, int]
    by_outcome: dict[str, int]
    dials_last_minute: int
    measured_calls_per_second: float
    estimated_end_at: datetime | None


def campaign_progress(*, campaign: Campaign) -> Progress:
    """Counts by state and outcome (one grouped query), the dial rate over the last minute and
    an estimate of the end: the recipients still to be tried at the measured rate (or the set
    one, before anything was measured), plus the calls under way."""
    now = timezone.now()
    by_state = {state.value: 0 for state in RecipientState}
    by_outcome: dict[str, int] = {}
    for state, outcome, count in (
        Recipient.objects.filter(campaign=campaign)
        .values_list("state", "outcome")
        .annotate(count=Count("id"))
        .order_by()
    ):
        by_state[state] = by_state.get(state, 0) + count
        if outcome:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    dials = Attempt.objects.filter(
        recipient__campaign=campaign, started_at__gte=now - timedelta(seconds=60)
    ).count()
    measured = dials / 60
    waiting = by_state[RecipientState.QUEUED] + by_state[RecipientState.RETRY_WAIT]
    estimate: datetime | None = None
    if campaign.status in (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED):
        rate = measured or float(campaign.calls_per_second)
        begin = max(now, campaign.start_at or now)
        estimate = begin + timedelta(seconds=math.ceil(waiting / rate))
    elif campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.CANCELED):
        estimate = campaign.ended_at
    return Progress(
        total=sum(by_state.values()),
        by_state=by_state,
        by_outcome=by_outcome,
        dials_last_minute=dials,
        measured_calls_per_second=round(measured, 3),
        estimated_end_at=estimate,
    )


# ---- the workers' side --------------------------------------------------------------------


def campaign_pace(campaign: Campaign) -> Pace:
    return Pace(key=f"campaign:{campaign.pk}", calls_per_second=campaign.calls_per_second)


MACHINE_VERDICTS = {AnsweredBy.MACHINE, AnsweredBy.FAX}


def outcome_of_call(call: Call) -> str:
    """The attempt's outcome: `machine` when the call asked for answering-machine detection and
    the verdict was a machine or a fax (neither is the person the campaign is calling, whatever
    `on_machine` then did); otherwise the final status its provider reported."""
    if call.voicemail is not None and call.answered_by in MACHINE_VERDICTS:
        return str(Outcome.MACHINE)
    return str(call.status)


def attempt_idempotency_key(recipient: Recipient, attempt: int) -> str:
    return f"campaign:{recipient.campaign_id}:recipient:{recipient.pk}:attempt:{attempt}"


def _release(*, recipient_id: int, from_state: str, campaign_id: UUID, **updates: Any) -> bool:
    """Move a recipient out of `dialing`/`calling` (claimed on its state) and give its slot back,
    in one transaction."""
    with transaction.atomic():
        moved = Recipient.objects.filter(pk=recipient_id, state=from_state).update(
            updated_at=timezone.now(), **updates
        )
        if moved:
            Campaign.objects.filter(pk=campaign_id).update(in_flight=F("in_flight") - 1)
    return bool(moved)


def _window_args(campaign: Campaign) -> dict[str, Any]:
    return {
        "start": campaign.window_start,
        "end": campaign.window_end,
        "days": campaign.window_days,
    }


def recipient_claim(*, campaign: Campaign, now: datetime | None = None) -> Recipient | None:
    """Claim the next due recipient whose window is open (None: none, or at the cap, or not
    running). Due recipients found outside their window are moved on to its next opening."""
    now = now or timezone.now()
    with transaction.atomic():
        candidates = list(
            Recipient.objects.filter(
                campaign_id=campaign.pk,
                state__in=[RecipientState.QUEUED, RecipientState.RETRY_WAIT],
                next_attempt_at__lte=now,
            )
            .order_by("next_attempt_at", "position")
            .select_for_update(skip_locked=True)[:CLAIM_BATCH]
        )
        for recipient in candidates:
            zones = recipient.time_zones.split(",")
            if campaign.has_window and not window_open(zones, now, **_window_args(campaign)):
                opening = window_next_open(zones, now, **_window_args(campaign))
                if opening is None:
                    Recipient.objects.filter(pk=recipient.pk).update(
                        state=RecipientState.DONE, outcome=Outcome.NO_WINDOW, updated_at=now
                    )
                else:
                    Recipient.objects.filter(pk=recipient.pk).update(
                        next_attempt_at=opening, updated_at=now
                    )
                continue
            # Compare-and-set even under the row lock: where the database has no row locks
            # (SQLite, the demo), two workers may have read the same row.
            claimed = Recipient.objects.filter(
                pk=recipient.pk,
                state__in=[RecipientState.QUEUED, RecipientState.RETRY_WAIT],
                attempts=recipient.attempts,
            ).update(
                state=RecipientState.DIALING,
                attempts=recipient.attempts + 1,
                claimed_at=now,
                updated_at=now,
            )
            if not claimed:
                continue
            room = Campaign.objects.filter(
                pk=campaign.pk,
                status=CampaignStatus.RUNNING,
                in_flight__lt=F("max_concurrent_calls"),
            ).update(in_flight=F("in_flight") + 1)
            if not room:
                transaction.set_rollback(True)  # the claim too: at the cap, or not running
                return None
            recipient.attempts += 1
            recipient.state = RecipientState.DIALING
            recipient.claimed_at = now
            # One statement; the row is there already when a dead worker's attempt is retried.
            Attempt.objects.bulk_create(
                [Attempt(recipient=recipient, number=recipient.attempts, started_at=now)],
                ignore_conflicts=True,
            )
            return recipient
    return None


class _Dialer:
    """One worker's dialling loop for one campaign: the numbers it called from are kept."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.numbers: dict[str, PhoneNumber | None] = {}

    def phone_number(self, recipient: Recipient) -> PhoneNumber | None:
        numbers = self.campaign.from_numbers
        number = numbers[(recipient.position - 1) % len(numbers)]
        if number not in self.numbers:
            found = phone_number_get(number=number)
            if found is not None and found.organization_id != self.campaign.organization_id:
                found = None
            self.numbers[number] = found
        return self.numbers[number]

    def still_running(self) -> bool:
        status = (
            Campaign.objects.filter(pk=self.campaign.pk).values_list("status", flat=True).first()
        )
        return status == CampaignStatus.RUNNING

    def wait_for_slot(self, paces: list[Pace], deadline: float) -> bool:
        """Reserve the next slot on every pace and sleep until it; False if the campaign stopped
        running or the deadline passed first."""
        while time.monotonic() < deadline + settings.CAMPAIGN_PACE_MAX_WAIT_SECONDS:
            try:
                reservation = pace_reserve(paces, max_wait=settings.CAMPAIGN_PACE_MAX_WAIT_SECONDS)
            except PacingUnavailable as exc:
                logger.warning(
                    "campaign %s waits: its pace cannot be read (%s)", self.campaign.pk, exc
                )
                time.sleep(1)
                if not self.still_running():
                    return False
                continue
            if reservation.granted:
                if reservation.wait_seconds > 0:
                    time.sleep(reservation.wait_seconds)
                return True
            time.sleep(min(reservation.wait_seconds, 0.5))
            if not self.still_running():
                return False
        return False

    def put_back(self, recipient: Recipient, *, at: datetime) -> None:
        """Not dialled after all: the attempt is given back, to be made at `at`."""
        with transaction.atomic():
            Attempt.objects.filter(recipient=recipient, number=recipient.attempts).delete()
            moved = Recipient.objects.filter(pk=recipient.pk, state=RecipientState.DIALING).update(
                state=RecipientState.QUEUED,
                attempts=F("attempts") - 1,
                next_attempt_at=at,
                claimed_at=None,
                updated_at=timezone.now(),
            )
            if moved:
                Campaign.objects.filter(pk=self.campaign.pk).update(in_flight=F("in_flight") - 1)

    def finish(self, recipient: Recipient, outcome: str) -> None:
        """Ended before any call was placed (do-not-call, no assistant...): no retry."""
        now = timezone.now()
        with transaction.atomic():
            Attempt.objects.filter(recipient=recipient, number=recipient.attempts).update(
                outcome=outcome, ended_at=now
            )
            moved = Recipient.objects.filter(pk=recipient.pk, state=RecipientState.DIALING).update(
                state=RecipientState.DONE, outcome=outcome, updated_at=now
            )
            if moved:
                Campaign.objects.filter(pk=self.campaign.pk).update(in_flight=F("in_flight") - 1)

    def dial(self, recipient: Recipient, deadline: float) -> None:
        campaign = self.campaign
        phone_number = self.phone_number(recipient)
        if phone_number is None:
            self.finish(recipient, Outcome.REFUSED)
            return
        paces = [campaign_pace(campaign)]
        account_pace = provider_account_pace(phone_number.provider_account)
        if account_pace is not None:
            paces.append(account_pace)
        if not self.wait_for_slot(paces, deadline):
            self.put_back(recipient, at=timezone.now())
            return
        now = timezone.now()
        zones = recipient.time_zones.split(",")
        if campaign.has_window and not window_open(zones, now, **_window_args(campaign)):
            # The window closed while the slot came: wait for its next opening.
            opening = window_next_open(zones, now, **_window_args(campaign))
            self.put_back(recipient, at=opening or now + timedelta(days=1))
            return
        place_call(dialer=self, recipient=recipient, phone_number=phone_number)


def place_call(*, dialer: _Dialer, recipient: Recipient, phone_number: PhoneNumber) -> None:
    """Place the recipient's current attempt under its idempotency key."""
    campaign = dialer.campaign
    key = attempt_idempotency_key(recipient, recipient.attempts)
    request = {
        "from_phone_number": str(phone_number.number),
        "to_phone_number": recipient.to_number,
        "assistant_id": campaign.assistant_id,
        "welcome_message": campaign.welcome_message,
        "agenda": campaign.agenda,
        "variables": recipient.variables,
        "metadata": {**campaign.metadata, **recipient.metadata},
    }
    if campaign.voicemail is not None:
        # Only when set: the fingerprint of an attempt without detection is what it always was.
        request["voicemail"] = campaign.voicemail
    try:
        claim = idempotency_key_claim(
            organization_id=campaign.organization_id,
            key=key,
            fingerprint=request_fingerprint(request),
        )
    except IdempotencyKeyInFlight:
        return  # its first owner may still be placing it: the stale-claim rule looks again
    if isinstance(claim, Replay):
        # This attempt was placed before (by a worker that died): adopt its call, never redial.
        _adopt_attempt_call(campaign=campaign, recipient=recipient, key=key, refused=claim)
        return
    try:
        call = call_initiate(
            organization=campaign.organization,
            phone_number=phone_number,
            to_number=recipient.to_number,
            assistant_override=campaign.assistant,
            welcome_message=campaign.welcome_message,
            agenda=campaign.agenda,
            variables=recipient.variables,
            metadata=request["metadata"],
            voicemail=Voicemail.from_request(campaign.voicemail),
            idempotency_claim=claim,
            paced=False,
        )
    except NumberOnDoNotCallList:
        idempotency_key_finish(record=claim, status=403, body={"detail": "do-not-call"})
        dialer.finish(recipient, Outcome.DO_NOT_CALL)
        return
    except (TooManyConcurrentCalls, InsufficientBalance) as exc:
        # Nothing was recorded: wait (the organization's cap frees as calls end; a top-up).
        IdempotencyKey.objects.filter(pk=claim.pk).delete()
        wait = 5 if isinstance(exc, TooManyConcurrentCalls) else 60
        dialer.put_back(recipient, at=timezone.now() + timedelta(seconds=wait))
        return
    except IdempotencyKeyInFlight:
        return  # the key was taken over (this dialer looked dead): the new holder dials it
    except DomainError as exc:
        idempotency_key_finish(record=claim, status=400, body={"detail": exc.message})
        linked = _call_of_key(campaign=campaign, key=key)
        if linked is not None:  # recorded, then failed at the provider: an outcome like any
            _mark_calling(campaign=campaign, recipient=recipient, call=linked)
        else:
            logger.info("campaign %s: %s not dialled: %s", campaign.pk, recipient.pk, exc)
            dialer.finish(recipient, Outcome.REFUSED)
        return
    idempotency_key_finish(record=claim, status=200, body={"call_id": str(call.pk)})
    _mark_calling(campaign=campaign, recipient=recipient, call=call)


def _call_of_key(*, campaign: Campaign, key: str) -> Call | None:
    row = (
        IdempotencyKey.objects.select_related("call")
        .filter(organization_id=campaign.organization_id, key=key)
        .first()
    )
    return row.call if row is not None else None


def _mark_calling(*, campaign: Campaign, recipient: Recipient, call: Call) -> None:
    with transaction.atomic():
        moved = Recipient.objects.filter(pk=recipient.pk, state=RecipientState.DIALING).update(
            state=RecipientState.CALLING, last_call=call, updated_at=timezone.now()
        )
        if moved:
            Attempt.objects.filter(recipient=recipient, number=recipient.attempts).update(call=call)


def _adopt_attempt_call(
    *, campaign: Campaign, recipient: Recipient, key: str, refused: Replay
) -> None:
    call = _call_of_key(campaign=campaign, key=key)
    if call is not None:
        _mark_calling(campaign=campaign, recipient=recipient, call=call)
        return
    _Dialer(campaign).finish(recipient, Outcome.REFUSED)


def recipients_collect(*, campaign: Campaign) -> int:
    """Record the outcome of every attempt whose call has ended, and apply the retry rule.
    Returns how many were recorded."""
    ended = list(
        Recipient.objects.filter(
            campaign_id=campaign.pk,
            state=RecipientState.CALLING,
            last_call__status__in=FINAL_STATES,
        ).select_related("last_call")
    )
    now = timezone.now()
    recorded = 0
    retrying = campaign.status in (CampaignStatus.RUNNING, CampaignStatus.PAUSED)
    for recipient in ended:
        call = recipient.last_call
        assert call is not None
        outcome = outcome_of_call(call)
        again = (
            retrying
            and outcome in campaign.retry_on
            and recipient.attempts < campaign.retry_max_attempts
        )
        updates: dict[str, Any] = {"outcome": outcome}
        if again:
            backoff = campaign.retry_backoff_seconds or [60]
            wait = backoff[min(recipient.attempts, len(backoff)) - 1]
            updates.update(
                state=RecipientState.RETRY_WAIT, next_attempt_at=now + timedelta(seconds=wait)
            )
        else:
            updates["state"] = RecipientState.DONE
        with transaction.atomic():
            if _release(
                recipient_id=recipient.pk,
                from_state=RecipientState.CALLING,
                campaign_id=campaign.pk,
                **updates,
            ):
                Attempt.objects.filter(recipient=recipient, number=recipient.attempts).update(
                    outcome=outcome, ended_at=call.ended_at or now
                )
                recorded += 1
    return recorded


def recipients_recover(*, campaign: Campaign, now: datetime | None = None) -> int:
    """Recipients left `dialing` by a worker that died: adopt the call their attempt recorded,
    or give the attempt back to be claimed again (under the same key)."""
    now = now or timezone.now()
    stale = Recipient.objects.filter(
        campaign_id=campaign.pk,
        state=RecipientState.DIALING,
        claimed_at__lt=now - timedelta(seconds=settings.CAMPAIGN_DIAL_STALE_SECONDS),
    )
    recovered = 0
    for recipient in stale:
        call = _call_of_key(
            campaign=campaign, key=attempt_idempotency_key(recipient, recipient.attempts)
        )
        if call is not None:
            _mark_calling(campaign=campaign, recipient=recipient, call=call)
        else:
            with transaction.atomic():
                moved = Recipient.objects.filter(
                    pk=recipient.pk, state=RecipientState.DIALING, claimed_at=recipient.claimed_at
                ).update(
                    state=RecipientState.QUEUED,
                    attempts=F("attempts") - 1,
                    next_attempt_at=now,
                    claimed_at=None,
                    updated_at=now,
                )
                if moved:
                    Campaign.objects.filter(pk=campaign.pk).update(in_flight=F("in_flight") - 1)
        recovered += 1
    return recovered


def campaign_complete_if_done(*, campaign: Campaign) -> bool:
    if campaign.status != CampaignStatus.RUNNING:
        return False
    if Recipient.objects.filter(campaign_id=campaign.pk, state__in=ACTIVE_STATES).exists():
        return False
    with transaction.atomic():
        if not _transition(
            campaign, [CampaignStatus.RUNNING], CampaignStatus.COMPLETED, ended_at=timezone.now()
        ):
            return False
        campaign_event_record(campaign=campaign, event_type=COMPLETED)
    return True


def campaigns_tick(*, now: datetime | None = None) -> dict[str, int]:
    """The scheduler's beat: start what is due, record outcomes, recover dead workers' claims,
    complete finished campaigns, and keep each running campaign's dialers going."""
    now = now or timezone.now()
    report = {"started": 0, "collected": 0, "recovered": 0, "completed": 0}
    for campaign in Campaign.objects.filter(status=CampaignStatus.SCHEDULED, start_at__lte=now):
        with transaction.atomic():
            if _transition(
                campaign, [CampaignStatus.SCHEDULED], CampaignStatus.RUNNING, started_at=now
            ):
                campaign_event_record(campaign=campaign, event_type=STARTED)
                report["started"] += 1
    live = Campaign.objects.filter(
        Q(status__in=[CampaignStatus.RUNNING, CampaignStatus.PAUSED]) | Q(in_flight__gt=0)
    ).select_related("organization", "assistant")
    for campaign in live:
        report["collected"] += recipients_collect(campaign=campaign)
        report["recovered"] += recipients_recover(campaign=campaign, now=now)
        if campaign_complete_if_done(campaign=campaign):
            report["completed"] += 1
        elif campaign.status == CampaignStatus.RUNNING:
            campaign_dialers_send(campaign=campaign)
    return report


def campaign_dialer_count(campaign: Campaign) -> int:
    """Enough dialers to keep the pace through a provider's answer time (each dial waits for
    it), never more than the campaign's cap nor CAMPAIGN_MAX_DIALERS."""
    wanted = math.ceil(float(campaign.calls_per_second) * settings.CAMPAIGN_DIAL_SECONDS) + 1
    return max(1, min(wanted, campaign.max_concurrent_calls, settings.CAMPAIGN_MAX_DIALERS))


def campaign_dialers_send(*, campaign: Campaign) -> None:
    from campaigns import tasks

    for slot in range(campaign_dialer_count(campaign)):
        try:
            tasks.campaign_dial.apply_async(
                (str(campaign.pk), slot),
                expires=settings.CAMPAIGN_TICK_SECONDS * 2,
                retry=False,
            )
        except Exception:
            logger.exception("could not send a dialer of campaign %s", campaign.pk)
            return


def _dialer_lock_key(campaign_id: UUID, slot: int) -> int:
    # A signed 64-bit key: the campaign's CRC in the high half, the slot in the low.
    value = (zlib.crc32(campaign_id.bytes) << 16) | (slot & 0xFFFF)
    return value - (1 << 63) if value >= 1 << 63 else value


def campaign_dial(*, campaign_id: UUID, slot: int) -> int:
    """One dialer of a campaign (one of its `slot`s): claim and dial due recipients for up to
    CAMPAIGN_DIALER_SECONDS. A slot is held with a PostgreSQL advisory lock, so a repeated or
    late task for a slot already dialling returns at once, and a dialer killed mid-run frees its
    slot with its connection. Returns how many attempts it began."""
    postgres = connection.vendor == "postgresql"
    key = _dialer_lock_key(campaign_id, slot)
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                return 0
    else:
        # No advisory locks (SQLite, the demo's single worker): a lease in the cache, one
        # dialer per campaign.
        lease = f"campaign-dialer:{campaign_id}"
        if slot > 0 or not cache.add(lease, 1, timeout=settings.CAMPAIGN_DIALER_SECONDS + 30):
            return 0
    try:
        return _dial_loop(campaign_id=campaign_id)
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        else:
            cache.delete(lease)


def _dial_loop(*, campaign_id: UUID) -> int:
    campaign = (
        Campaign.objects.select_related("organization", "assistant")
        .filter(pk=campaign_id, status=CampaignStatus.RUNNING)
        .first()
    )
    if campaign is None:
        return 0
    dialer = _Dialer(campaign)
    deadline = time.monotonic() + settings.CAMPAIGN_DIALER_SECONDS
    begun = 0
    while time.monotonic() < deadline:
        recipient = recipient_claim(campaign=campaign)
        if recipient is None:
            # At the cap, calls ending make room: record them and claim again. With room and
            # nothing claimed, nothing is due: give the worker back (the tick sends dialers
            # again when something is).
            if recipients_collect(campaign=campaign):
                continue
            state = (
                Campaign.objects.filter(pk=campaign.pk)
                .values_list("status", "in_flight", "max_concurrent_calls")
                .first()
            )
            if state is None or state[0] != CampaignStatus.RUNNING or state[1] < state[2]:
                break
            time.sleep(0.2)
            continue
        begun += 1
        dialer.dial(recipient, deadline)
    return begun

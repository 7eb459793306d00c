from __future__ import annotations

from django.db import models


class CallState(models.TextChoices):
    """The one lifecycle every provider's events are mapped onto (Twilio's names)."""

    QUEUED = "queued", "Queued"  # our row exists; the provider has not been asked yet
    # The provider did not answer in time (or the connection dropped after we asked): it may
    # have placed the call. Its first webhook adopts it; the sweep asks the provider.
    UNKNOWN = "unknown", "Unknown"
    INITIATED = "initiated", "Initiated"  # the provider accepted it and gave us its id
    RINGING = "ringing", "Ringing"
    IN_PROGRESS = "in-progress", "In progress"
    COMPLETED = "completed", "Completed"
    BUSY = "busy", "Busy"
    NO_ANSWER = "no-answer", "No answer"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


FINAL_STATES = frozenset(
    {CallState.COMPLETED, CallState.BUSY, CallState.NO_ANSWER, CallState.FAILED, CallState.CANCELED}
)

# Events only move a call forward: a late "ringing" after "in-progress" changes nothing.
STATE_RANK = {
    CallState.QUEUED: 0,
    CallState.UNKNOWN: 1,
    CallState.INITIATED: 2,
    CallState.RINGING: 3,
    CallState.IN_PROGRESS: 4,
    **{state: 5 for state in FINAL_STATES},
}


def states_before(state: str) -> list[str]:
    rank = STATE_RANK[CallState(state)]
    return [s.value for s, r in STATE_RANK.items() if r < rank]


class AnsweredBy(models.TextChoices):
    """Who answered a call, as the provider's machine detection judged it (null on a call that
    did not ask)."""

    HUMAN = "human", "A person"
    MACHINE = "machine", "An answering machine"
    FAX = "fax", "A fax machine"
    # The provider could not tell: the call goes on as if a person had answered.
    UNKNOWN = "unknown", "Could not tell"


class OnMachine(models.TextChoices):
    """What a call that asked for machine detection does when a machine answers."""

    HANGUP = "hangup", "Hang up at once"
    LEAVE_MESSAGE = "leave_message", "Leave the message after the beep, then hang up"
    CONTINUE = "continue", "Hand it to the assistant as any call"

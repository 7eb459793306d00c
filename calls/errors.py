"""Placing a call's rules, as domain errors, worded exactly as the public docs give them (the API
maps them to statuses in burki.exceptions). The 403s are the permission classes' own
(calls/permissions.py), and templating's 400 is `calls.templating.TemplateError`."""

from __future__ import annotations

import math
from uuid import UUID

from burki.errors import DomainError


class NoAssistantFound(DomainError):
    code = "no_assistant"

    def __init__(self, number: str) -> None:
        super().__init__(f"No assistant found for phone number {number}")


class AssistantInactive(DomainError):
    code = "assistant_inactive"

    def __init__(self, assistant_id: int) -> None:
        super().__init__(f"Assistant {assistant_id} is not active")


class TooManyConcurrentCalls(DomainError):
    code = "too_many_concurrent_calls"
    # Calls end every few seconds in a busy organization: a retry soon may find room.
    retry_after_seconds = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many simultaneous calls: your organization's limit is {limit}. "
            "Try again when a call has ended."
        )


class ProviderFailed(DomainError):
    """The provider refused the call, or failed in a way we did not foresee."""

    code = "provider_error"
    default_message = "The telephony provider could not place the call."


class ProviderTimedOut(DomainError):
    """We stopped waiting, which says nothing of whether the provider placed the call: the call
    is kept (`unknown`, its hold too) for its webhooks or the sweep to settle."""

    code = "provider_timeout"
    default_message = (
        "The telephony provider did not answer in time; the call may have been placed. "
        "Follow it at GET /calls/{call_id}."
    )

    def __init__(self, call_id: UUID | str | None = None) -> None:
        super().__init__()
        if call_id is not None:
            self.extra["call_id"] = str(call_id)


class ProviderUnavailable(DomainError):
    code = "provider_unavailable"
    default_message = "The telephony provider is not available right now; try again shortly."


class CallNotConfirmed(DomainError):
    """A hang-up asked of a call its provider has not confirmed yet: there is nothing to name
    to the provider."""

    code = "call_not_confirmed"
    default_message = (
        "This call cannot be ended yet: its provider has not confirmed it. Try again shortly."
    )


class HangUpFailed(DomainError):
    code = "hang_up_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The telephony provider could not end the call: {reason}")


IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class IdempotencyKeyInvalid(DomainError):
    code = "idempotency_key_invalid"
    default_message = (
        f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
        "characters."
    )


class IdempotencyKeyInFlight(DomainError):
    code = "idempotency_key_in_flight"
    default_message = (
        f"A request with this {IDEMPOTENCY_HEADER} is still being processed; retry shortly."
    )


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    default_message = f"This {IDEMPOTENCY_HEADER} was already used with a different request body."


class MachineDetectionUnsupported(DomainError):
    """`voicemail` asked of a number whose provider has no answering-machine detection."""

    code = "machine_detection_unsupported"

    def __init__(self, provider_label: str) -> None:
        super().__init__(
            f"{provider_label} numbers cannot detect answering machines: leave voicemail out, "
            "or call from a Twilio, Telnyx, Vonage or sandbox number."
        )


class VoicemailMessageTooLong(DomainError):
    code = "voicemail_message_too_long"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"voicemail.message must be at most {limit} characters once its variables are "
            "filled in."
        )


class TransferUnsupported(DomainError):
    code = "transfer_unsupported"

    def __init__(self, provider_label: str) -> None:
        super().__init__(f"{provider_label} calls cannot be transferred.")


class CallNotInProgress(DomainError):
    code = "call_not_in_progress"

    def __init__(self, status: str) -> None:
        super().__init__(f"Only a call in progress can be transferred, and this call is {status}.")


class TransferFailed(DomainError):
    code = "transfer_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The telephony provider could not transfer the call: {reason}")


class NumberOnDoNotCallList(DomainError):
    """The number is on the organization's do-not-call list: nothing is dialled or held."""

    code = "do_not_call"

    def __init__(self, number: str, *, not_done: str = "the call was not placed") -> None:
        super().__init__(f"{number} is on your organization's do-not-call list; {not_done}.")


class CallsPerSecondExceeded(DomainError):
    """The provider account's calls a second are taken for longer than a request may wait."""

    code = "calls_per_second_exceeded"

    def __init__(self, calls_per_second: str, retry_after: float) -> None:
        super().__init__(
            f"Too many calls a second through this number's provider account: its limit is "
            f"{calls_per_second} a second. Try again shortly."
        )
        # Whole seconds, at least one (Retry-After is an integer).
        self.retry_after_seconds = max(1, math.ceil(retry_after))

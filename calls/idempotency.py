"""`Idempotency-Key` on POST /calls/initiate: a retried request never dials twice.

A key belongs to an organization and lives IDEMPOTENCY_KEY_TTL_SECONDS (24 h). The first request
to insert the key's row owns it (the unique constraint decides, so it holds across processes);
the same key then gets:

- the same body, first request finished: its answer again, status and body, without dialling;
- the same body, first request still running: 409;
- a different body: 422.

Which answers are kept for replay: every answer the request reached once it ran, success or
error (200, 400 from templating, 402, 404, 500, 502, 504), because the same retry would either
get the same answer or, worse after a time-out, dial a second time. Not kept: 409, 429 (limits)
and 503 (provider unavailable), which say "try again later" and were reached without dialling;
the key is released so the retry runs afresh. Answers given before the request ran (400 for a
bad body, 401, 403, a throttling 429) never claim the key at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.authentication import request_api_key
from calls.errors import (
    IDEMPOTENCY_HEADER,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    ProviderFailed,
    ProviderTimedOut,
)
from calls.models import Call, IdempotencyKey
from calls.services import call_initiated_body
from telephony.states import CallState

HEADER = IDEMPOTENCY_HEADER
MAX_KEY_LENGTH = MAX_IDEMPOTENCY_KEY_LENGTH

# Answers that mean "try again later" and were reached without dialling: never replayed.
NOT_STORED = frozenset(
    {
        status.HTTP_409_CONFLICT,
        status.HTTP_429_TOO_MANY_REQUESTS,
        status.HTTP_503_SERVICE_UNAVAILABLE,
    }
)


def idempotent(
    view: APIView,
    request: Request,
    data: Mapping[str, Any],
    respond: Callable[[IdempotencyKey | None], Response],
) -> Response:
    """`respond(claim)` once per `Idempotency-Key`: a retry with the same key and `data` (the
    validated body) gets the first answer again, with `Idempotent-Replayed: true`.

    Without the header it simply responds (`claim` None). With it, the key is
    claimed first, and the answer `respond` reaches, error or not, is kept as the client saw it
    (shaped by `view.handle_exception`), so the retry of a request that failed after it had
    dialled cannot dial again.
    """
    raw_key = request.headers.get(HEADER)
    if raw_key is None:
        return respond(None)
    claimed = idempotency_key_claim(
        organization_id=request_api_key(request).organization_id,
        key=idempotency_key_parse(raw_key),
        fingerprint=request_fingerprint(data),
    )
    if isinstance(claimed, Replay):
        return Response(
            claimed.body, status=claimed.status, headers={"Idempotent-Replayed": "true"}
        )
    try:
        response = respond(claimed)
    except Exception as exc:
        try:
            response = view.handle_exception(exc)
        except Exception:
            # Not an API error: the client gets Django's 500, and so will its retry.
            body = {"detail": "Internal server error."}
            idempotency_key_finish(record=claimed, status=500, body=body)
            raise
    idempotency_key_finish(record=claimed, status=response.status_code, body=response.data)
    return response


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any


def idempotency_key_parse(raw: str) -> str:
    if not raw or len(raw) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in raw):
        raise IdempotencyKeyInvalid()
    return raw


def request_fingerprint(data: Mapping[str, Any]) -> str:
    """SHA-256 of the validated request as canonical JSON: numbers are already in E.164, and a
    field sent as null is the same request as one left out."""
    canonical = json.dumps(
        {key: value for key, value in data.items() if value is not None},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _answer_from_call(call: Call) -> Replay | None:
    """What a request that died after recording its call would have answered (None: unknown
    yet, the call is still queued until `reconcile_calls` settles it)."""
    if call.status == CallState.QUEUED:
        return None
    if call.status == CallState.UNKNOWN:
        timed_out = ProviderTimedOut(call.pk)
        return Replay(
            status.HTTP_504_GATEWAY_TIMEOUT, {"detail": timed_out.message, **timed_out.extra}
        )
    if call.status == CallState.FAILED and not call.call_sid:
        detail = call.error or ProviderFailed.default_message
        return Replay(status.HTTP_502_BAD_GATEWAY, {"detail": detail})
    return Replay(status.HTTP_200_OK, call_initiated_body(call))


def idempotency_key_claim(
    *, organization_id: int, key: str, fingerprint: str
) -> IdempotencyKey | Replay:
    """Own the key (returns the row) or learn what the request that owns it answered.

    Raises IdempotencyKeyInFlight (409) or IdempotencyKeyReused (422).
    """
    for _ in range(3):  # a row we found may expire or be released under us: look again
        now = timezone.now()
        try:
            # Its own savepoint: a lost race must not break the caller's transaction.
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    organization_id=organization_id,
                    key=key,
                    fingerprint=fingerprint,
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS),
                )
        except IntegrityError:
            pass
        existing = (
            IdempotencyKey.objects.select_related("call")
            .filter(organization_id=organization_id, key=key)
            .first()
        )
        if existing is None:
            continue
        if existing.expires_at <= now:
            IdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        if existing.status == IdempotencyKey.Status.DONE:
            return Replay(existing.response_status or 200, existing.response_body)
        if existing.created_at > now - timedelta(seconds=settings.IDEMPOTENCY_STALE_SECONDS):
            raise IdempotencyKeyInFlight()
        # The owner died (a killed worker). Without a recorded call nothing was committed, so
        # nothing was dialled: take the key over. With one, answer from what happened to it.
        if existing.call is None:
            taken = IdempotencyKey.objects.filter(
                pk=existing.pk,
                status=IdempotencyKey.Status.IN_FLIGHT,
                call__isnull=True,
                created_at=existing.created_at,
            ).update(created_at=now)
            if not taken:
                raise IdempotencyKeyInFlight()
            existing.created_at = now
            return existing
        answer = _answer_from_call(existing.call)
        if answer is None:
            raise IdempotencyKeyInFlight()
        idempotency_key_finish(record=existing, status=answer.status, body=answer.body)
        return answer
    raise IdempotencyKeyInFlight()


def idempotency_key_finish(*, record: IdempotencyKey, status: int, body: Any) -> None:
    """Keep the answer for replay, or release the key when the answer says "try later".

    Only while the claim is still `record`'s (fenced on its time): a request whose key a retry
    took over must not overwrite or release the retry's claim."""
    claim = IdempotencyKey.objects.filter(
        pk=record.pk, status=IdempotencyKey.Status.IN_FLIGHT, created_at=record.created_at
    )
    if status in NOT_STORED:
        claim.delete()
        return
    claim.update(status=IdempotencyKey.Status.DONE, response_status=status, response_body=body)


def idempotency_keys_purge(*, now: Any = None) -> int:
    """Delete expired keys; returns how many."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted

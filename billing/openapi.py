"""The OpenAPI declarations of the billing API (drf-spectacular), kept out of the views; each
function returns one operation's `extend_schema`, given the serializers the view declares."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema

from burki.schema import (
    AUTHENTICATION_ERRORS,
    BAD_CURSOR,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    SerializerClass,
    rate_limited,
)


def retrieve_balance(*, response: SerializerClass) -> Any:
    return extend_schema(
        operation_id="billing_balance_retrieve",
        summary="Retrieve your balance",
        description=(
            "Your organization's balance in integer minor units (cents for USD). "
            "`available_cents` is `balance_cents` less `reserved_cents`, the money held for "
            "calls in progress; a call is refused with a 402 when it does not pay for one "
            "minute at `rate_cents_per_minute`."
        ),
        tags=["billing"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={200: response, **AUTHENTICATION_ERRORS, 429: rate_limited()},
    )


def list_ledger(*, item: SerializerClass) -> Any:
    return extend_schema(
        operation_id="billing_ledger_list",
        summary="List ledger entries",
        description=(
            "Every change to your organization's balance, newest first, a page at a time: "
            "follow `next` (a cursor link) until it is null. A call writes a `hold` when it is "
            "placed, then a `charge` for the minutes it lasted and a `release` of the rest of "
            "the hold."
        ),
        tags=["billing"],
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            200: item(many=True),
            **AUTHENTICATION_ERRORS,
            **BAD_CURSOR,
            429: rate_limited(),
        },
    )

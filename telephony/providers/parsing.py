"""What more than one provider reads from the values its API and webhooks send.

Plain functions of plain values rather than methods on `Provider`: they need no provider, so
each is tested on its own, and base.py stays the interface a provider implements.
"""

from __future__ import annotations

import requests
import urllib3

NOT_ACCEPTED = "the request was not accepted."


def whole_seconds(value: str | None) -> int | None:
    """A duration sent as text in whole seconds; anything else ("", "3.5", "-1") is none."""
    # isdigit() alone lets "²" through, which int() then refuses, and "٣", which int() reads:
    # no provider writes either.
    return int(value) if value and value.isascii() and value.isdigit() else None


def error_detail(body: object) -> str:
    """The sentence a provider's JSON error body gives, ending in one full stop.

    Reads either shape: `{"errors": [{"detail" or "title"}]}` (Telnyx: the first error's
    detail, else its title) and problem+json's `{"title", "detail"}` (Vonage: both, joined).
    """
    if not isinstance(body, dict):
        return NOT_ACCEPTED
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        detail = first.get("detail") or first.get("title")
        if detail:
            return str(detail).rstrip(".") + "."
    parts = [str(body[key]).rstrip(".") for key in ("title", "detail") if body.get(key)]
    if parts:
        return ": ".join(parts) + "."
    return NOT_ACCEPTED


def sent_before_it_failed(exc: requests.RequestException) -> bool:
    """Whether a `requests` failure came after the request reached the provider, which may then
    have acted on it: no answer in time, or the connection dropped while we waited for the
    answer. (A refused connection or a connect time-out sent nothing.)"""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ReadTimeout | requests.exceptions.ChunkedEncodingError):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        cause = exc.args[0]
        if isinstance(cause, urllib3.exceptions.MaxRetryError):
            cause = cause.reason
        return isinstance(cause, urllib3.exceptions.ProtocolError)
    return False

"""Rate limits per API key, counted in Django's cache (Redis when CACHE_URL/REDIS_URL is set).

Rates come from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], read when a request is checked (not
when the class is defined), so settings overrides apply. A throttled request gets a 429 with
`Retry-After` from DRF's own handler.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from burki.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Every API request, per key. Requests without a key (webhooks, 401s) are not counted."""

    scope = "api_key"

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class InitiateRateThrottle(ApiKeyRateThrottle):
    """Placing calls, per key: tighter than reads, since each one dials a phone."""

    scope = "initiate"

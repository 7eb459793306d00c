"""Rate limits per API key, counted in Django's cache (Redis when CACHE_URL/REDIS_URL is set).

Rates come from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], read when a request is checked (not
when the class is defined), so settings overrides apply. A throttled request gets a 429 with
`Retry-After` from DRF's own handler.

The count is exact. DRF's own throttle reads a key's history, decides, then writes it back, so
concurrent requests all see the last free slot (13 of 10 got through under 40 at once). Here,
in Redis, the whole check-and-count is one Lua script, atomic across processes and machines; in
any other cache (local memory by default, where the counters are per process anyway) a lock of
the process makes it one step. The window slides as DRF's does: a request counts for `duration`
seconds after it was let through, on Redis's clock.

A cache that cannot be reached lets requests through: a rate limit guards the service and must
not take it down. It logs a warning at most once a minute per process, and leaves that cache
alone for a few seconds before asking again, so an unreachable server costs its time-out once
in a while rather than on every request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from burki.models import ApiKey

logger = logging.getLogger(__name__)

# KEYS[1]: the key's sorted set of admitted requests (member: a unique id, score: when).
# ARGV: the limit, the window in seconds, this request's id.
# Returns "" when the request is admitted, else the seconds until the oldest one leaves the
# window (a string: Redis would truncate a Lua number to an integer).
SLIDING_WINDOW = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return ''
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""

# After a failure, how long the cache is left alone, and how often the failure is logged.
OUTAGE_RETRY_SECONDS = 5.0
OUTAGE_LOG_SECONDS = 60.0

_local_lock = threading.Lock()


class _Outages:
    """Per process: when each cache (by its location) may be asked again, and when it was
    last logged as down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._retry_at: dict[str, float] = {}
        self._logged_at: dict[str, float] = {}

    def is_down(self, where: str) -> bool:
        return time.monotonic() < self._retry_at.get(where, 0.0)

    def record(self, where: str, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._retry_at[where] = now + OUTAGE_RETRY_SECONDS
            last = self._logged_at.get(where)
            if last is not None and now - last < OUTAGE_LOG_SECONDS:
                return
            self._logged_at[where] = now
        logger.warning(
            "rate limits not enforced: the cache cannot be reached (%s: %s); requests are let "
            "through, and the cache is asked again every %.0f s",
            type(error).__name__,
            error,
            OUTAGE_RETRY_SECONDS,
        )

    def clear(self) -> None:
        with self._lock:
            self._retry_at.clear()
            self._logged_at.clear()


outages = _Outages()


def _cache_location(cache: BaseCache) -> str:
    if isinstance(cache, RedisCache):
        return ",".join(getattr(cache, "_servers", ()))
    return f"{type(cache).__module__}.{type(cache).__qualname__}"


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Every API request, per key. Requests without a key (webhooks, 401s) are not counted."""

    scope = "api_key"
    num_requests: int | None
    duration: int | None

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return None if rate is None else str(rate)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self._wait: float | None = None
        # The backend itself (not django.core.cache.cache, a proxy), looked up per request so
        # that settings overrides apply.
        self.cache = cache = caches["default"]
        where = _cache_location(cache)
        if outages.is_down(where):
            return True
        try:
            if isinstance(cache, RedisCache):
                return self._allow_in_redis(cache)
            with _local_lock:
                return bool(super().allow_request(request, view))
        except (RedisError, OSError) as error:
            outages.record(where, error)
            return True

    def _allow_in_redis(self, cache: RedisCache) -> bool:
        assert self.key is not None and self.num_requests is not None and self.duration
        key = cache.make_and_validate_key(self.key)
        client = cache._cache.get_client(key, write=True)
        script = client.register_script(SLIDING_WINDOW)
        wait = script(keys=[key], args=[self.num_requests, self.duration, uuid.uuid4().hex])
        if not wait:
            return True
        self._wait = float(wait)
        return False

    def wait(self) -> float | None:
        if getattr(self, "_wait", None) is not None:
            return self._wait
        return super().wait()


class InitiateRateThrottle(ApiKeyRateThrottle):
    """Placing calls, per key: tighter than reads, since each one dials a phone."""

    scope = "initiate"

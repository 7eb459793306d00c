"""Pacing: calls a second, shared by every process and machine (in Redis when the cache is Redis).

A pace is a schedule of slots `1/rate` seconds apart (GCRA: each key keeps the time of its next
free slot). `pace_reserve` takes the next slot common to every key it is given (a campaign's own
rate and its provider account's), waiting for it if it is at most `max_wait` seconds away, and
refuses otherwise, reserving nothing. So the slots handed out never exceed the rate over any
window, however many workers ask, and no slot is lost when nobody asks: a pace that was idle
starts again from now, never with a burst.

In Redis the whole reservation is one Lua script, atomic across processes and machines, on
Redis's clock; in any other cache (local memory) a lock of the process makes it one step, and
the pace holds within that process only. A cache that cannot be reached raises
`PacingUnavailable`: the caller decides (an API request goes through, a campaign waits).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

# KEYS: one per pace, each holding the time of its next free slot (seconds, Redis's clock).
# ARGV[1]: the longest wait accepted; ARGV[1 + i]: the seconds between two slots of KEYS[i].
# Returns {granted (1 or 0), the wait in seconds (a string: Redis truncates Lua numbers)}.
RESERVE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local max_wait = tonumber(ARGV[1])
local at = now
for i, key in ipairs(KEYS) do
  local next_free = tonumber(redis.call('GET', key) or '0')
  if next_free > at then at = next_free end
end
local wait = at - now
if wait > max_wait then
  return {0, tostring(wait)}
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i + 1])
  local ttl = math.ceil((at + interval - now) * 1000) + 1000
  redis.call('SET', key, tostring(at + interval), 'PX', ttl)
end
return {1, tostring(wait)}
"""


class PacingUnavailable(Exception):
    """The shared pace cannot be read (the cache's Redis is down)."""


@dataclass(frozen=True)
class Pace:
    key: str
    calls_per_second: Decimal

    @property
    def interval(self) -> float:
        return 1.0 / float(self.calls_per_second)


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait_seconds: float  # granted: until the slot; refused: until the next free one


_local_lock = threading.Lock()
_local_next_free: dict[str, float] = {}


def pace_reserve(paces: list[Pace], *, max_wait: float) -> Reservation:
    """The next slot free on every pace, if it is at most `max_wait` seconds away (then it is
    taken on all of them), else nothing. The caller waits `wait_seconds` before dialling."""
    if not paces:
        return Reservation(True, 0.0)
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        keys = [cache.make_and_validate_key(f"pace:{pace.key}") for pace in paces]
        try:
            client = cache._cache.get_client(keys[0], write=True)
            script = client.register_script(RESERVE)
            granted, wait = script(
                keys=keys, args=[repr(max_wait), *(repr(pace.interval) for pace in paces)]
            )
        except (RedisError, OSError) as exc:
            raise PacingUnavailable(str(exc)) from exc
        return Reservation(bool(int(granted)), float(wait))
    with _local_lock:
        now = time.monotonic()
        at = max([now, *(_local_next_free.get(pace.key, 0.0) for pace in paces)])
        if at - now > max_wait:
            return Reservation(False, at - now)
        for pace in paces:
            _local_next_free[pace.key] = at + pace.interval
        return Reservation(True, at - now)


def pace_wait(paces: list[Pace], *, max_wait: float) -> float | None:
    """Reserve a slot and sleep until it: the seconds waited, or None (refused, nothing taken:
    the next slot is further than `max_wait`)."""
    reservation = pace_reserve(paces, max_wait=max_wait)
    if not reservation.granted:
        return None
    if reservation.wait_seconds > 0:
        time.sleep(reservation.wait_seconds)
    return reservation.wait_seconds


def paces_reset() -> None:
    """Forget this process's local paces (tests)."""
    with _local_lock:
        _local_next_free.clear()

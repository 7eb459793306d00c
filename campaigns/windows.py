"""Calling windows in each recipient's own local time.

A number's zones come from `phonenumbers`' timezone data. A number whose zone it cannot tell
(fictional ranges such as +1555…) may be anywhere its country calling code reaches, so it takes
every zone of that code. A recipient with several zones is called only when the window is open
in all of them (the window they all agree on): never outside anyone's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

from campaigns.models import WEEKDAYS

UNKNOWN = "Etc/Unknown"
# How far ahead the next opening is looked for; a window that opens within none of these days
# (a number whose zones never agree) never opens.
HORIZON_DAYS = 8


def time_zones_for(number: str) -> tuple[str, ...]:
    parsed = phonenumbers.parse(number, None)
    zones = tuple(phone_timezone.time_zones_for_number(parsed))
    if not zones or zones == (UNKNOWN,):
        # Not public API, but the data behind the public function's own fallback.
        zones = tuple(phone_timezone._country_level_time_zones_for_number(parsed))
    zones = tuple(zone for zone in zones if zone != UNKNOWN and _zone(zone) is not None)
    return zones or ("UTC",)


@cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _open_in(zone: ZoneInfo, at: datetime, start: time, end: time, days: Sequence[str]) -> bool:
    local = at.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start <= end:
        inside = start <= clock < end
        day = local.weekday()
    else:  # over midnight: 20:00-02:00 belongs to the day it started on
        inside = clock >= start or clock < end
        day = local.weekday() if clock >= start else (local.weekday() - 1) % 7
    return inside and (not days or WEEKDAYS[day] in days)


def window_open(
    zones: Sequence[str], at: datetime, *, start: time, end: time, days: Sequence[str]
) -> bool:
    return all(
        _open_in(zone, at, start, end, days)
        for zone in (_zone(name) for name in zones)
        if zone is not None
    )


def window_next_open(
    zones: Sequence[str], after: datetime, *, start: time, end: time, days: Sequence[str]
) -> datetime | None:
    """The first moment at or after `after` when the window is open in every zone (None: not
    within HORIZON_DAYS). The window they agree on opens when the last of them opens, so the
    candidates are each zone's local openings."""
    if window_open(zones, after, start=start, end=end, days=days):
        return after
    candidates: list[datetime] = []
    for name in zones:
        zone = _zone(name)
        if zone is None:
            continue
        local_day = after.astimezone(zone).date()
        for offset in range(-1, HORIZON_DAYS + 1):
            day = local_day + timedelta(days=offset)
            opening = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
            if opening > after:
                candidates.append(opening)
    for candidate in sorted(candidates):
        if window_open(zones, candidate, start=start, end=end, days=days):
            return candidate
    return None

"""The admin's dashboard: the last 30 days of calls, drawn as SVG on the server (no script, no
CDN): calls per day, minutes, spend, answer rate and outcomes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.money import format_money
from calls.models import Call

DAYS = 30
CHART_WIDTH, CHART_HEIGHT = 600, 120
BAR_GAP = 2


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # what hovering the bar says


@dataclass(frozen=True)
class Chart:
    title: str
    total: str
    bars: list[Bar]
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


@dataclass(frozen=True)
class Outcome:
    status: str
    count: int
    percent: float


@dataclass(frozen=True)
class Dashboard:
    since: dt.date
    until: dt.date
    calls: int
    answered: int
    minutes: int
    spend: str
    answer_rate: str
    charts: list[Chart]
    outcomes: list[Outcome]


def _chart(
    title: str, total: str, days: list[dt.date], values: list[int], fmt: Callable[[int], str]
) -> Chart:
    top = max(values, default=0) or 1
    slot = CHART_WIDTH / len(days)
    bars = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        height = round(value / top * (CHART_HEIGHT - 1), 1) if value else 0
        bars.append(
            Bar(
                x=round(index * slot, 1),
                y=round(CHART_HEIGHT - height, 1),
                width=round(slot - BAR_GAP, 1),
                height=height,
                label=f"{day:%b %d}: {fmt(value)}",
            )
        )
    return Chart(title=title, total=total, bars=bars)


def calls_dashboard(calls: QuerySet[Call], *, today: dt.date | None = None) -> Dashboard:
    """`calls` is what the viewer may see (the admin's scoped queryset); the last DAYS days of
    it, today included, by the UTC day the call was placed."""
    until = today or timezone.now().date()
    since = until - dt.timedelta(days=DAYS - 1)
    start = dt.datetime.combine(since, dt.time.min, tzinfo=dt.UTC)
    recent = calls.filter(created_at__gte=start).order_by()
    per_day: dict[dt.date, dict[str, Any]] = {
        row["day"]: dict(row)
        for row in recent.annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(
            calls=Count("id"),
            answered=Count("id", filter=Q(answered_at__isnull=False)),
            seconds=Sum("duration_seconds"),
            spend=Sum("cost_cents"),
        )
    }
    days = [since + dt.timedelta(days=n) for n in range(DAYS)]

    def series(key: str) -> list[int]:
        return [int((per_day.get(day) or {}).get(key) or 0) for day in days]

    counts, answered, seconds = series("calls"), series("answered"), series("seconds")
    minutes = [-(-day_seconds // 60) for day_seconds in seconds]
    total_minutes = -(-sum(seconds) // 60)
    spend = series("spend")
    total_calls, total_answered = sum(counts), sum(answered)
    outcomes = [
        Outcome(row["status"], row["n"], round(100 * row["n"] / total_calls, 1))
        for row in recent.values("status").annotate(n=Count("id")).order_by("-n", "status")
    ]
    return Dashboard(
        since=since,
        until=until,
        calls=total_calls,
        answered=total_answered,
        minutes=total_minutes,
        spend=format_money(sum(spend)),
        answer_rate=f"{100 * total_answered / total_calls:.0f}%" if total_calls else "—",
        charts=[
            _chart("Calls per day", f"{total_calls} calls", days, counts, str),
            _chart("Minutes per day", f"{total_minutes} min", days, minutes, lambda m: f"{m} min"),
            _chart("Spend per day", format_money(sum(spend)), days, spend, format_money),
        ],
        outcomes=outcomes,
    )

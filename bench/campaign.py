"""The campaign benchmark: a 10,000-recipient campaign dialled at a set rate by a fleet of Celery
workers, one of them killed with SIGKILL mid-run and started again.

    .venv/bin/python bench/campaign.py            # 10,000 recipients at 20 a second
    .venv/bin/python bench/campaign.py --quick    # 1,000 recipients
    .venv/bin/python bench/campaign.py --help

It drops and creates its own PostgreSQL database (`burki_campaign_bench`, or
BENCH_CAMPAIGN_DATABASE_URL), empties its Redis database (redis://127.0.0.1:6379/12, or
BENCH_CAMPAIGN_REDIS_URL; the broker and the shared pace both live there), seeds an organization
with a sandbox number whose provider account paces it (`calls_per_second` above the campaign's,
so both paces are in every reservation) and starts, as separate processes, two Celery workers
(prefork) and the scheduler (`celery -A burki beat`). The sandbox provider places the calls: the
real `call_initiate`, holds, webhooks outbox, the sandbox's lifecycles played by the workers
(SANDBOX_TIME_SCALE=20: calls talk 1-3 s) and the sweep for calls whose steps a killed worker
took with it.

The recipients are in three time zones, with a calling window chosen at the start so that
London's are inside it for the whole run, New York's open a little after the start, and Los
Angeles' stay outside it (they must not be dialled: they wait for their window). Numbers ending
in 0002 are busy and 0003 never answer: both retry (3 attempts, 5 s then 10 s apart).

It prints the recipients, the dials, the recipients dialled twice in one attempt, the recipients
lost (due, never reaching a final outcome), the measured rate against the set one (per 10-second
window: mean and worst), the peak of simultaneous calls against the cap, and the dials made
outside a recipient's window; and exits non-zero if a figure is wrong.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
DATABASE_URL = os.environ.get(
    "BENCH_CAMPAIGN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/burki_campaign_bench"
)
REDIS_URL = os.environ.get("BENCH_CAMPAIGN_REDIS_URL", "redis://127.0.0.1:6379/12")
ZONES = {  # number prefix -> (zone, share of the list)
    "+4420": ("Europe/London", 0.6),
    "+1212": ("America/New_York", 0.3),
    "+1415": ("America/Los_Angeles", 0.1),
}
SERVICE_SETTINGS = {
    "DEBUG": "false",
    "SECRET_KEY": "campaign-bench-secret-key-not-for-production",
    "FIELD_ENCRYPTION_KEYS": "0" * 43 + "=",
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "CACHE_URL": REDIS_URL,
    "SANDBOX_TIME_SCALE": "20",
    "CALL_RING_TIMEOUT_SECONDS": "10",
    "CALL_SWEEP_INTERVAL_SECONDS": "5",
    "CALL_SWEEP_GRACE_SECONDS": "0",
    "CALL_RECONCILE_INTERVAL_SECONDS": "10",
    "CALL_RECONCILE_GRACE_SECONDS": "20",
    "IDEMPOTENCY_STALE_SECONDS": "20",
    "CAMPAIGN_DIAL_STALE_SECONDS": "15",
    # Dialers enough for the rate on a loaded 2-core machine, where a dial takes 0.1-0.3 s.
    "CAMPAIGN_DIAL_SECONDS": "0.25",
    "CAMPAIGN_MAX_DIALERS": "4",
    "CELERY_BEAT_SCHEDULE_FILENAME": str(Path(tempfile.gettempdir()) / "campaign-bench-beat"),
    "LOG_LEVEL": "WARNING",
}
TIME_LIMIT_SECONDS = 60  # the assistant's: a call whose steps were lost is swept soon after


def log(message: str) -> None:
    print(message, flush=True)


def setup_django() -> None:
    os.environ.update(SERVICE_SETTINGS)
    os.environ["DJANGO_SETTINGS_MODULE"] = "burki.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def recreate_database() -> None:
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def numbers(total: int) -> list[str]:
    """`total` numbers over the zones; one in ten ends 0002 (busy), one in ten 0003 (no answer)."""
    result = []
    for prefix, (_, share) in ZONES.items():
        count = round(total * share)
        for i in range(count):
            ending = ("0002", "0003")[i % 2] if i % 10 in (0, 1) else f"{1000 + i % 9000:04d}"
            block = i // 10
            # A North American exchange starts with 2-9 (else phonenumbers cannot place it).
            body = f"{block:04d}{ending}" if prefix == "+4420" else f"{200 + block:03d}{ending}"
            result.append(prefix + body)
    return result[:total]


def window_for_run(now: datetime, run_minutes: int) -> tuple[Any, Any]:
    """A window London is inside for the whole run, New York opens two minutes in, and Los
    Angeles stays out of."""
    from zoneinfo import ZoneInfo

    new_york = now.astimezone(ZoneInfo("America/New_York"))
    london = now.astimezone(ZoneInfo("Europe/London"))
    start = (new_york + timedelta(minutes=2)).time().replace(second=0, microsecond=0)
    end = (london + timedelta(minutes=run_minutes)).time().replace(second=0, microsecond=0)
    return start, end


def seed(args: argparse.Namespace) -> tuple[Any, Any]:
    from decimal import Decimal

    from django.db import transaction

    from assistants.models import Assistant
    from billing.models import Balance
    from billing.services import balance_top_up
    from burki.models import Organization
    from campaigns.models import Campaign
    from campaigns.services import recipients_add
    from telephony.models import PhoneNumber, ProviderAccount

    run_minutes = max(30, math.ceil(args.recipients * 1.3 / args.rate / 60) + 20)
    start, end = window_for_run(datetime.now(UTC), run_minutes)
    with transaction.atomic():
        org = Organization.objects.create(name="Campaign bench", max_concurrent_calls=10_000)
        Balance.objects.get_or_create(organization=org)
        balance_top_up(organization=org, amount_cents=10**12, memo="bench funds")
        assistant = Assistant.objects.create(
            organization=org,
            name="Bench assistant",
            welcome_message="Hello {{name}}.",
            max_call_duration_seconds=TIME_LIMIT_SECONDS,
        )
        account = ProviderAccount.objects.create(  # type: ignore[misc]  # secrets: a dict
            organization=org,
            provider="sandbox",
            name="Bench sandbox",
            settings={},
            secrets={},
            calls_per_second=Decimal(args.rate) * 2,
        )
        number = PhoneNumber.objects.create(
            organization=org,
            number="+15550100009",
            provider="sandbox",
            provider_account=account,
            assistant=assistant,
        )
        campaign = Campaign.objects.create(
            organization=org,
            name="Bench campaign",
            from_numbers=[str(number.number)],
            calls_per_second=Decimal(args.rate),
            max_concurrent_calls=args.cap,
            window_start=start,
            window_end=end,
            retry_max_attempts=3,
            retry_on=["busy", "no-answer"],
            retry_backoff_seconds=[5, 10],
        )
    rows = [
        (i, {"to_phone_number": n, "variables": {"name": f"R{i}"}})
        for i, n in enumerate(numbers(args.recipients), start=1)
    ]
    for at in range(0, len(rows), 10_000):
        recipients_add(campaign=campaign, rows=rows[at : at + 10_000])
    return campaign, (start, end)


def start_process(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as output:
        return subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env={**os.environ, **SERVICE_SETTINGS},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_worker(name: str, args: argparse.Namespace, logs: Path) -> subprocess.Popen[bytes]:
    return start_process(
        [
            str(BIN / "celery"),
            "-A",
            "burki",
            "worker",
            "--hostname",
            f"{name}@%h",
            "--concurrency",
            str(args.concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        logs / f"{name}.log",
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """SIGTERM to the main process (a warm shutdown), or `sig` to its whole group."""
    if process.poll() is None:
        if sig == signal.SIGTERM:
            os.kill(process.pid, sig)
        else:
            os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


OUT_OF_WINDOW = "+1415"  # Los Angeles: its window does not open during the run


def due_left(campaign: Any) -> int:
    """Recipients whose window opens during the run not yet at a final outcome."""
    from campaigns.models import Recipient

    return (
        Recipient.objects.filter(campaign=campaign)
        .exclude(state="done")
        .exclude(to_number__startswith=OUT_OF_WINDOW)
        .count()
    )


def figures(campaign: Any, window: tuple[Any, Any], args: argparse.Namespace) -> bool:
    from django.db.models import Count, Min

    from calls.models import Call, CallEvent
    from campaigns.models import Attempt, Recipient
    from campaigns.windows import window_next_open, window_open

    recipients = {r.to_number: r for r in Recipient.objects.filter(campaign=campaign)}
    calls = list(
        Call.objects.filter(organization=campaign.organization)
        .order_by("created_at")
        .values_list("id", "to_number", "created_at")
    )
    attempts = Counter(
        dict(
            Attempt.objects.filter(recipient__campaign=campaign)
            .values_list("recipient__to_number")
            .annotate(n=Count("id"))
            .values_list("recipient__to_number", "n")
        )
    )
    per_number = Counter(to for _, to, _ in calls)
    twice = sum(max(0, per_number[n] - attempts[n]) for n in per_number)
    held_by_window = Recipient.objects.filter(campaign=campaign, state="queued", attempts=0).count()
    lost = due_left(campaign)
    outside = sum(
        1
        for _, to, at in calls
        if not window_open(
            recipients[to].time_zones.split(","), at, start=window[0], end=window[1], days=[]
        )
    )
    # The rate, per 10-second window from the first dial. The mean is over the windows in which
    # dialling was due all along: some recipient was due at the window's start (London's from
    # the campaign's start, New York's from their window's opening) and not dialled before its
    # end; retries only add to what is due. The worst is over every window.
    first_started = dict(
        Attempt.objects.filter(recipient__campaign=campaign, number=1).values_list(
            "recipient__to_number", "started_at"
        )
    )
    begun = campaign.started_at
    due_at = {
        to: window_next_open(
            r.time_zones.split(","), begun, start=window[0], end=window[1], days=[]
        )
        for to, r in recipients.items()
        if to in first_started
    }
    first, last = calls[0][2], calls[-1][2]
    counts = Counter(int((at - first).total_seconds() // 10) for _, _, at in calls)
    every = [counts[i] / 10 for i in range(int((last - first).total_seconds() // 10))]

    def saturated(i: int) -> bool:
        start, end = first + timedelta(seconds=10 * i), first + timedelta(seconds=10 * i + 10)
        return any(
            due is not None and due <= start and first_started[to] >= end
            for to, due in due_at.items()
        )

    full = [rate for i, rate in enumerate(every) if saturated(i)]
    mean = sum(full) / len(full) if full else 0.0
    worst = max(every, default=0.0)
    everything = len(calls) / max(1.0, (calls[-1][2] - first).total_seconds())
    # Simultaneous calls: from the call's record to its final event, both on our wall clock.
    ended = dict(
        CallEvent.objects.filter(
            call__organization=campaign.organization,
            status__in=["completed", "busy", "no-answer", "failed", "canceled"],
        )
        .values_list("call_id")
        .annotate(at=Min("created_at"))
        .values_list("call_id", "at")
    )
    edges = []
    for call_id, _, at in calls:
        edges.append((at, 1))
        edges.append((ended.get(call_id, datetime.max.replace(tzinfo=UTC)), -1))
    live = peak = 0
    for _, step in sorted(edges):
        live += step
        peak = max(peak, live)
    outcomes = Counter(
        Recipient.objects.filter(campaign=campaign).values_list("outcome", flat=True)
    )
    rate = args.rate
    log(
        f"recipients                {len(recipients)} (held by their window, not dialled: "
        f"{held_by_window})"
    )
    log(f"dials                     {len(calls)} ({sum(attempts.values())} attempts)")
    log(f"outcomes                  {dict(sorted(outcomes.items()))}")
    log(f"dialled twice in one attempt {twice}")
    log(f"lost                      {lost}")
    log(
        f"rate                      set {rate}/s; per 10 s window: mean {mean:.2f}/s "
        f"({100 * (mean - rate) / rate:+.1f} %), worst {worst:.1f}/s "
        f"({100 * (worst - rate) / rate:+.1f} %); the mean over the {len(full)} windows in which "
        f"dialling was due all along, the worst over all {len(every)}; "
        f"{everything:.2f}/s from the first dial to the last retry"
    )
    log(f"peak simultaneous calls   {peak} (cap {args.cap})")
    log(f"dials outside a window    {outside}")
    ok = (
        twice == 0
        and lost == 0
        and outside == 0
        and peak <= args.cap
        and worst <= rate * 1.10
        and abs(mean - rate) <= rate * 0.05
        and held_by_window
        == sum(1 for r in recipients.values() if r.to_number.startswith(OUT_OF_WINDOW))
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 recipients")
    parser.add_argument("--recipients", type=int, default=None, help="10,000 (--quick: 1,000)")
    parser.add_argument("--rate", type=int, default=20, help="the campaign's calls a second")
    # Above rate x talk time by a margin: a killed worker takes the sandbox steps it held with it,
    # and those calls keep their slots until the sweep settles them (about two minutes here).
    parser.add_argument("--cap", type=int, default=400, help="the campaign's simultaneous calls")
    parser.add_argument("--concurrency", type=int, default=6, help="pool processes per worker")
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of dials, then SIGKILL")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds the run may take")
    args = parser.parse_args()
    if args.recipients is None:
        args.recipients = 1000 if args.quick else 10_000

    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    recreate_database()
    setup_django()
    from django.core.management import call_command

    from calls.models import Call
    from campaigns.services import campaign_start

    call_command("migrate", verbosity=0)
    campaign, window = seed(args)
    log(
        f"campaign: {args.recipients} recipients at {args.rate}/s, cap {args.cap}, window "
        f"{window[0]:%H:%M}-{window[1]:%H:%M} local; 2 workers x {args.concurrency} processes"
    )
    logs = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    beat = start_process(
        [str(BIN / "celery"), "-A", "burki", "beat", "--loglevel", "WARNING"], logs / "beat.log"
    )
    workers = {name: start_worker(name, args, logs) for name in ("w1", "w2")}
    time.sleep(3)
    started = time.monotonic()
    campaign_start(campaign=campaign)
    kill_after = int(args.recipients * 0.9 * args.kill_at)
    killed = False
    try:
        while True:
            time.sleep(2)
            dials = Call.objects.filter(organization=campaign.organization).count()
            left = due_left(campaign)
            if not killed and dials >= kill_after:
                stop(workers["w2"], signal.SIGKILL)
                log(f"{time.monotonic() - started:6.0f} s: w2 killed (SIGKILL) after {dials} dials")
                time.sleep(5)
                workers["w2"] = start_worker("w2", args, logs)
                log(f"{time.monotonic() - started:6.0f} s: w2 started again")
                killed = True
            if killed and left == 0:
                break
            if time.monotonic() - started > args.timeout:
                log("timed out")
                break
    finally:
        for process in [*workers.values(), beat]:
            stop(process)
    log(f"run: {time.monotonic() - started:.0f} s; logs in {logs}")
    ok = figures(campaign, window, args)
    log("campaign: " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

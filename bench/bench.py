"""What initiating a call costs, against the framework's own floor. Run it with `bench/run`.

It builds its own PostgreSQL database, starts the service the production way (gunicorn with
deploy/gunicorn.conf.py, DEBUG off), seeds a funded organization and drives these scenarios with
wrk:

  baseline            GET /calls/{id} of a finished call: auth plus indexed reads, no writes
  initiate/sandbox    POST /calls/initiate from a sandbox number
  initiate/twilio     the same from a Twilio number: the real SDK, talking to bench/fake_twilio.py
  initiate/twilio200  the same with the fake Twilio answering after 200 ms, as a real provider
                      does, with enough connections in flight to keep the same rate through it
                      (--slow-connections); /health is timed beside it on one more connection
  webhook             POST /webhooks/calls/{id}/status: a signed Twilio status callback

Then (unless --quick) it grows the calls and ledger tables to 1,000,000 rows each and drives
the same again. The last line is the summary: each ratio is of two scenarios of the same run,
on the same server.

With --compare-with DIR, a second copy of the project (another commit, e.g. unpacked with
`git archive`) is set up the same way on its own database and port, and its scenarios take turns
with this tree's in every round: a before/after comparison from one run on one machine. With
--compare-server SPEC, the second server is this tree served another way (SPEC: gunicorn options
and NAME=value settings): how bench/RESULTS.md chose the web tier's shape.

Everything that needs Django runs in a child process inside the tree it measures
(`bench.py --task ...`), so each tree is seeded and counted with its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PORTS = range(38000, 39000)
# The background engine's broker while the benchmark runs: a Redis database of its own.
BROKER_URL = os.environ.get("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
LARGE_ROWS = 1_000_000
SANDBOX_NUMBER = "+15550100001"
TWILIO_NUMBER = "+15550100002"
TO_NUMBER = "+15559876543"
ACCOUNT_SID = "AC" + "b" * 32
# How long the fake Twilio takes to answer in the initiate/twilio200 scenario.
SLOW_TWILIO_SECONDS = 0.2


@dataclass(frozen=True)
class Seed:
    api_key: str
    organization_id: int
    baseline_call_id: str
    webhook_path: str
    webhook_body: str
    webhook_signature: str


@dataclass
class Target:
    label: str
    source: Path
    database_url: str
    port: int
    env: dict[str, str]
    server: dict[str, str] = field(default_factory=dict)  # workers, threads, worker_class, app
    seed: Seed | None = None
    gunicorn: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Request:
    url: str
    method: str = "GET"
    body: str | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    connections: int | None = None  # wrk's --connections unless set
    twilio_delay: float = 0.0


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_bad: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def log(message: str) -> None:
    print(message, flush=True)


def free_port(taken: set[int]) -> int:
    candidates = [p for p in PORTS if p not in taken]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise SystemExit("no free port in 38000-38999")


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.2)


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {port}") from None
            time.sleep(0.1)


def seed() -> Seed:
    from urllib.parse import urlencode

    from django.conf import settings
    from django.db import transaction
    from twilio.request_validator import RequestValidator

    from assistants.models import Assistant
    from billing.services import balance_top_up
    from burki.models import Organization
    from burki.services import api_key_create
    from calls.services import call_apply_event, call_initiate
    from telephony.models import PhoneNumber, ProviderAccount
    from telephony.providers.base import StatusEvent

    with transaction.atomic():
        # No worker plays the sandbox calls here, so they stay live: lift the call cap.
        org = Organization.objects.create(name="Bench", max_concurrent_calls=10**9)
        # Enough for millions of calls: nothing in the run may be refused for money.
        balance_top_up(organization=org, amount_cents=10**13, memo="benchmark funds")
        assistant = Assistant.objects.create(
            organization=org, name="Bench assistant", welcome_message="Hello {{name}}."
        )
        sandbox = PhoneNumber.objects.create(
            organization=org, number=SANDBOX_NUMBER, provider="sandbox", assistant=assistant
        )
        auth_token = secrets.token_hex(16)
        account = ProviderAccount.objects.create(  # type: ignore[misc]  # secrets: a dict
            organization=org,
            provider="twilio",
            name="Bench Twilio",
            settings={"account_sid": ACCOUNT_SID},
            secrets={"auth_token": auth_token},
            calls_per_second=10000,  # the stand-in takes any rate: measure us, not a pace
        )
        twilio = PhoneNumber.objects.create(
            organization=org,
            number=TWILIO_NUMBER,
            provider="twilio",
            provider_account=account,
            assistant=assistant,
        )
        _, raw_key = api_key_create(organization=org, name="benchmark")
    # The baseline reads a finished call: a live sandbox call would advance (and write) on read.
    call = call_initiate(
        organization=org,
        phone_number=sandbox,
        to_number=TO_NUMBER,
        variables={"name": "Ann"},
    )
    call_apply_event(
        call=call,
        event=StatusEvent(state="completed", provider_call_id=call.call_sid, duration_seconds=42),
        source="sandbox",
    )
    # The webhook scenario: Twilio repeating the `ringing` callback of a call that was answered
    # since. Every request is verified, parsed and applied, and changes nothing (events only
    # move a call forward), so the thousandth costs what the first did.
    live = call_initiate(
        organization=org, phone_number=twilio, to_number=TO_NUMBER, variables={"name": "Ann"}
    )
    call_apply_event(
        call=live,
        event=StatusEvent(state="in-progress", provider_call_id=live.call_sid),
        source="twilio",
    )
    path = f"/webhooks/calls/{live.pk}/status"
    form = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": live.call_sid,
        "CallStatus": "ringing",
        "From": TWILIO_NUMBER,
        "To": TO_NUMBER,
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(auth_token).compute_signature(
        settings.PUBLIC_BASE_URL + path, form
    )
    return Seed(
        api_key=raw_key,
        organization_id=org.pk,
        baseline_call_id=str(call.pk),
        webhook_path=path,
        webhook_body=urlencode(form),
        webhook_signature=signature,
    )


def initiate_body(from_number: str) -> str:
    return json.dumps(
        {
            "from_phone_number": from_number,
            "to_phone_number": TO_NUMBER,
            "variables": {"name": "Ann"},
        }
    )


def count_queries(seed: Seed) -> dict[str, int]:
    """SQL statements per request in the steady state, counted in this process through the
    same URLconf, settings and database as the workers (outside any test transaction)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {seed.api_key}")
    requests = {
        "baseline": lambda: client.get(f"/calls/{seed.baseline_call_id}"),
        "initiate/sandbox": lambda: client.post(
            "/calls/initiate", initiate_body(SANDBOX_NUMBER), content_type="application/json"
        ),
        "initiate/twilio": lambda: client.post(
            "/calls/initiate", initiate_body(TWILIO_NUMBER), content_type="application/json"
        ),
        "webhook": lambda: client.post(
            seed.webhook_path,
            seed.webhook_body,
            content_type="application/x-www-form-urlencoded",
            headers={"X-Twilio-Signature": seed.webhook_signature},
        ),
        "health": lambda: client.get("/health"),
    }
    counts = {}
    for name, send in requests.items():
        send()  # the API key's last_used_at is written at most once a minute: not steady state
        with CaptureQueriesContext(connection) as queries:
            response = send()
        if response.status_code != 200:
            raise SystemExit(f"{name}: {response.status_code} {response.content[:200]!r}")
        counts[name] = len(queries)
    # The same request as initiate/twilio: only the fake Twilio's answer is slower.
    counts["initiate/twilio200"] = counts["initiate/twilio"]
    return counts


def grow_tables(organization_id: int) -> None:
    """Calls and ledger rows up to LARGE_ROWS each, spread over the bench organization and three
    others, older than anything the run writes: the shape of a service that has been busy."""
    from django.db import connection

    from burki.models import Organization

    org_ids = [organization_id] + [
        Organization.objects.create(name=f"Bulk {n}").pk for n in range(1, 4)
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SELECT count(*) FROM calls_call")
        missing_calls = max(0, LARGE_ROWS - cursor.fetchone()[0])
        cursor.execute(
            """
            INSERT INTO calls_call (
                id, organization_id, from_number, to_number, provider, call_sid, status,
                welcome_message, agenda, variables, time_limit_seconds, rate_cents_per_minute,
                hold_cents, duration_seconds, cost_cents, end_reason, error,
                created_at, initiated_at, answered_at, ended_at, updated_at
            )
            SELECT gen_random_uuid(), (%(orgs)s::bigint[])[1 + i %% 4], %(from_number)s,
                   '+1555' || lpad((i %% 10000000)::text, 7, '0'), 'sandbox', 'BULK' || i,
                   (ARRAY['completed', 'completed', 'completed', 'busy', 'no-answer'])[1 + i %% 5],
                   'Hello.', '', '{}'::jsonb, 600, 10, 100, 60, 10, '', '',
                   at, at, at, at, at
            FROM (
                SELECT i, now() - interval '1 day' - make_interval(secs => i) AS at
                FROM generate_series(1, %(count)s) AS i
            ) AS generated
            """,
            {"orgs": org_ids, "from_number": SANDBOX_NUMBER, "count": missing_calls},
        )
        cursor.execute("SELECT count(*) FROM billing_ledgerentry")
        missing_entries = max(0, LARGE_ROWS - cursor.fetchone()[0])
        # Zero-amount rows keep every balance equal to its ledger's sum.
        cursor.execute(
            """
            INSERT INTO billing_ledgerentry (
                organization_id, kind, amount_cents, held_change_cents, balance_after_cents,
                held_after_cents, call_id, memo, created_at
            )
            SELECT organization_id, 'charge', 0, 0, 0, 0, id, '', created_at
            FROM calls_call WHERE call_sid LIKE 'BULK%%' LIMIT %(count)s
            """,
            {"count": missing_entries},
        )
        cursor.execute("VACUUM ANALYZE calls_call")
        cursor.execute("VACUUM ANALYZE billing_ledgerentry")
        cursor.execute("VACUUM ANALYZE calls_callevent")
        # Flush what the growth wrote now, so the measurement does not share the disk and CPU
        # with a checkpoint of a gigabyte of setup writes.
        cursor.execute("CHECKPOINT")


def table_rows() -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM calls_call), (SELECT count(*) FROM billing_ledgerentry)"
        )
        calls, entries = cursor.fetchone()
    return calls, entries


def start_wrk(
    request: Request, seed: Seed, seconds: int, args: argparse.Namespace, threads: int = 0
) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_METHOD": request.method, "BENCH_API_KEY": seed.api_key}
    if request.body is not None:
        env["BENCH_BODY"] = request.body
        env["BENCH_CONTENT_TYPE"] = request.content_type
    env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in request.headers)
    connections = request.connections or args.connections
    command = [
        "wrk",
        "-t", str(threads or min(args.threads, connections)),
        "-c", str(connections),
        "-d", f"{seconds}s",
        "--timeout", "10s",
        "-s", str(ROOT / "bench" / "wrk.lua"),
        request.url,
    ]  # fmt: skip
    return subprocess.Popen(  # noqa: S603 (wrk, with our own arguments)
        command, env=env, stdout=subprocess.PIPE, text=True
    )


def wrk_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"wrk exited with {process.returncode}")
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def run_wrk(request: Request, seed: Seed, seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    return wrk_result(start_wrk(request, seed, seconds, args))


def pooled_percentile(rounds: list[dict[str, Any]], percent: float) -> float:
    """A percentile of all rounds' requests together: each round's 1,000 quantiles stand for
    equal shares of its requests."""
    weighted = sorted(
        (value, r["requests"] / len(r["quantiles_us"]))
        for r in rounds
        for value in r["quantiles_us"]
    )
    target = sum(weight for _, weight in weighted) * percent / 100
    seen = 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= target:
            return float(value)
    return float(weighted[-1][0])


SCENARIOS = ("baseline", "initiate/sandbox", "initiate/twilio", "initiate/twilio200", "webhook")
# Timed beside initiate/twilio200, on a connection of its own: what every other request waits.
BESIDE = "health@twilio200"


def scenario_request(name: str, target: Target, args: argparse.Namespace) -> Request:
    seed = target.seed
    assert seed is not None
    if name == "baseline":
        return Request(f"{target.base_url}/calls/{seed.baseline_call_id}")
    if name == "webhook":
        return Request(
            target.base_url + seed.webhook_path,
            "POST",
            seed.webhook_body,
            content_type="application/x-www-form-urlencoded",
            headers=(("X-Twilio-Signature", seed.webhook_signature),),
        )
    if name == BESIDE:
        return Request(f"{target.base_url}/health", connections=1)
    number = SANDBOX_NUMBER if name == "initiate/sandbox" else TWILIO_NUMBER
    url, body = f"{target.base_url}/calls/initiate", initiate_body(number)
    if name == "initiate/twilio200":
        # Little's law: the rate of the instant scenario through a 200 ms answer needs that
        # rate times 0.2 s requests in flight.
        return Request(
            url, "POST", body, connections=args.slow_connections, twilio_delay=SLOW_TWILIO_SECONDS
        )
    return Request(url, "POST", body)


def wait_idle(target: Target, seconds: float = 30.0) -> None:
    """Until the server answers /health at once: a server that queued more requests than it
    could take (wrk's connections are closed, not its requests) finishes them before the next
    scenario starts, or the fake Twilio is restarted under them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        with urllib.request.urlopen(f"{target.base_url}/health", timeout=seconds):  # noqa: S310
            pass
        if time.monotonic() - started < 0.05:
            return
        time.sleep(0.2)


class FakeTwilio:
    """bench/fake_twilio.py on one port, restarted with another --delay when a scenario asks
    for it: the servers keep one TWILIO_API_BASE_URL. (The SDK's pooled connections to the old
    process are seen closed and replaced, as after any restart of Twilio's side.)"""

    def __init__(self, port: int) -> None:
        self.port = port
        self.delay: float | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def use(self, delay: float) -> None:
        if self.process is not None and self.delay == delay:
            return
        if self.delay:
            time.sleep(2 * self.delay + 1)  # what the servers still have in flight finishes
        self.stop()
        self.process = subprocess.Popen(  # noqa: S603 (our own venv's programs)
            [
                str(BIN / "python"),
                str(ROOT / "bench" / "fake_twilio.py"),
                str(self.port),
                "--delay",
                str(delay),
            ]
        )
        self.delay = delay
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def run_scenarios(
    targets: list[Target], args: argparse.Namespace, fake: FakeTwilio
) -> dict[str, dict[str, Result]]:
    """Results by target label, then by scenario."""
    # A warm-up first (imports, connection pools, PostgreSQL's buffers), then the scenarios (and
    # the trees) take turns, so a neighbour's burst on this shared machine falls on all alike.
    for target in targets:
        for name in SCENARIOS:
            request = scenario_request(name, target, args)
            fake.use(request.twilio_delay)
            run_wrk(request, target.seed, args.warmup, args)  # type: ignore[arg-type]
    names = (*SCENARIOS, BESIDE)
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {
        (t.label, name): [] for t in targets for name in names
    }
    per_round = max(1, args.duration // args.rounds)
    for _ in range(args.rounds):
        for name in SCENARIOS:
            for target in targets:
                request = scenario_request(name, target, args)
                fake.use(request.twilio_delay)
                beside = None
                if name == "initiate/twilio200":
                    beside = start_wrk(
                        scenario_request(BESIDE, target, args),
                        target.seed,  # type: ignore[arg-type]
                        per_round,
                        args,
                        threads=1,
                    )
                rounds[target.label, name].append(
                    run_wrk(request, target.seed, per_round, args)  # type: ignore[arg-type]
                )
                if beside is not None:
                    rounds[target.label, BESIDE].append(wrk_result(beside))
                wait_idle(target)
    results: dict[str, dict[str, Result]] = {t.label: {} for t in targets}
    for (label, name), runs in rounds.items():
        results[label][name] = result = Result(
            name=name,
            requests=sum(r["requests"] for r in runs),
            seconds=sum(r["duration_us"] for r in runs) / 1e6,
            p50_ms=pooled_percentile(runs, 50) / 1000,
            p99_ms=pooled_percentile(runs, 99) / 1000,
            errors=sum(r["non2xx"] + r["socket_errors"] for r in runs),
            first_bad=next((r["first_bad"] for r in runs if r["first_bad"]), ""),
        )
        log(
            f"  {label:<9} {name:<18} {result.rps:8.1f} req/s  p50 {result.p50_ms:6.1f} ms  "
            f"p99 {result.p99_ms:6.1f} ms  errors {result.errors}"
            + (f"  (first: {result.first_bad})" if result.errors else "")
        )
    return results


def worker_pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return []
    return sorted(int(pid) for pid in children)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def collection_pauses(target: Target) -> str:
    """How often the workers stopped for a full collection, and for how long."""
    try:
        lines = Path(target.env["GUNICORN_GC_PAUSE_LOG"]).read_text().split()
    except FileNotFoundError:
        return "none"
    pauses = sorted(float(line) for line in lines)
    if not pauses:
        return "none"
    p50 = pauses[len(pauses) // 2]
    p90 = pauses[min(len(pauses) - 1, len(pauses) * 9 // 10)]
    return (
        f"{len(pauses)} in all workers, pause p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
        f"max {pauses[-1]:.1f} ms"
    )


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def print_report(
    args: argparse.Namespace,
    targets: list[Target],
    phases: dict[str, dict[str, dict[str, Result]]],
    rows: dict[str, dict[str, tuple[int, int]]],
    queries: dict[str, dict[str, dict[str, int]]],
    rss: dict[str, dict[int, float]],
) -> None:
    log("")
    log(
        f"machine: {os.cpu_count()} cores, load average at start {args.load_at_start}, "
        f"at the end {args.load_at_end}; wrk -t{args.threads} "
        f"-c{args.connections} (initiate/twilio200: -c{args.slow_connections}, fake Twilio "
        f"answering after {SLOW_TWILIO_SECONDS * 1000:.0f} ms; {BESIDE}: -c1 beside it) "
        f"-d{args.duration // args.rounds}s x {args.rounds} rounds per scenario, taking turns "
        f"(after a {args.warmup}s warm-up)"
    )
    for target in targets:
        log(f"{target.label}: {describe_server(target)}")
    if args.compare_with:
        log("this: this tree; compare: the tree given with --compare-with")
    header = (
        f"{'tree':<9} {'scenario':<18} {'tables':<6} {'calls':>9} {'ledger':>9} {'req/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7} {'errors':>6} {'queries':>7}"
    )
    log(header)
    log("-" * len(header))
    for phase in phases:
        for target in targets:
            calls, entries = rows[phase][target.label]
            for name, r in phases[phase][target.label].items():
                counted = queries[phase][target.label].get(name.split("@")[0], "-")
                log(
                    f"{target.label:<9} {name:<18} {phase:<6} {calls:>9} {entries:>9} "
                    f"{r.rps:>8.1f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
                    f"{ratio(r.p99_ms, r.p50_ms):>7.2f} {r.errors:>6} {counted:>7}"
                )
    log("")
    for target in targets:
        label = target.label
        for phase in phases:
            log(f"{label} {phase} tables: {ratios(phases[phase][label])}")
        if "large" in phases:
            large, small = phases["large"][label], phases["small"][label]
            log(
                f"{label} large/small: "
                + " ".join(
                    f"{name}={ratio(large[name].rps, small[name].rps):.2f}" for name in SCENARIOS
                )
            )
            # The machine's load moves between the two phases; the baseline barely touches the
            # grown tables, so initiate's share of it shows what the table size itself costs.
            log(
                f"{label} large/small relative to the baseline's own change: "
                + " ".join(
                    f"{name}="
                    + format(
                        ratio(
                            ratio(large[name].rps, large["baseline"].rps),
                            ratio(small[name].rps, small["baseline"].rps),
                        ),
                        ".2f",
                    )
                    for name in SCENARIOS[1:]
                )
            )
        log(f"{label} full garbage collections: {collection_pauses(target)}")
        log(
            f"{label} peak RSS per worker (MiB): "
            + ", ".join(f"pid {pid} {mib:.1f}" for pid, mib in sorted(rss[label].items()))
        )
    if len(targets) > 1:
        this, other = targets[0].label, targets[1].label
        for phase, by_tree in phases.items():
            log(
                f"{this}/{other} throughput, {phase} tables: "
                + " ".join(
                    f"{name}={ratio(by_tree[this][name].rps, by_tree[other][name].rps):.2f}"
                    for name in SCENARIOS
                )
            )
    label = targets[0].label
    small = phases["small"][label]
    large_small = "skipped"
    if "large" in phases:
        large = phases["large"][label]
        large_small = f"{ratio(large['initiate/sandbox'].rps, small['initiate/sandbox'].rps):.2f}"
    initiate_queries = max(q[label]["initiate/sandbox"] for q in queries.values())
    log(f"summary: {ratios(small)} large/small={large_small} queries={initiate_queries}")


def ratios(results: dict[str, Result]) -> str:
    """The summary's figures for one tree and phase: each a ratio of two scenarios of the same
    run, and /health's p99 while initiate/twilio200 ran."""
    base = results["baseline"].rps
    return (
        f"initiate/baseline={ratio(results['initiate/sandbox'].rps, base):.2f} "
        f"twilio/baseline={ratio(results['initiate/twilio'].rps, base):.2f} "
        f"twilio200/twilio="
        f"{ratio(results['initiate/twilio200'].rps, results['initiate/twilio'].rps):.2f} "
        f"webhook/baseline={ratio(results['webhook'].rps, base):.2f} "
        f"health_p99_during_twilio200={results[BESIDE].p99_ms:.1f}ms"
    )


def run_task(args: argparse.Namespace) -> None:
    """Child-process side: Django set up on the tree in the working directory."""
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    result: Any
    if args.task == "seed":
        result = seed().__dict__
    elif args.task == "queries":
        result = count_queries(Seed(**json.loads(args.task_input)))
    elif args.task == "grow":
        grow_tables(int(args.task_input))
        result = "grown"
    else:
        result = table_rows()
    print(json.dumps(result))


def django_task(target: Target, task: str, task_input: str = "") -> Any:
    command = [str(BIN / "python"), str(ROOT / "bench" / "bench.py"), "--task", task]
    if task_input:
        command += ["--task-input", task_input]
    done = subprocess.run(  # noqa: S603 (our own script)
        command, cwd=target.source, env=target.env, check=False, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{target.label}: task {task} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


SERVER_FLAGS = {"--workers": "workers", "--threads": "threads", "--worker-class": "worker_class"}


def server_settings(args: argparse.Namespace, spec: str = "") -> tuple[dict[str, str], dict]:
    """What serves a target: gunicorn's options (workers, threads, worker class, app), from the
    command line then `spec` (`--workers 4 DATABASE_POOL_MAX_SIZE=0 ...`), and the settings
    `spec` changes."""
    server = {
        name: str(value)
        for name, value in (
            ("workers", args.workers),
            ("threads", args.server_threads),
            ("worker_class", args.worker_class),
            ("app", args.app),
        )
        if value
    }
    settings: dict[str, str] = {}
    tokens = shlex.split(spec)
    while tokens:
        token = tokens.pop(0)
        if "=" in token and not token.startswith("-"):
            name, value = token.split("=", 1)
            settings[name] = value
        elif token in SERVER_FLAGS or token == "--app":
            server[SERVER_FLAGS.get(token, "app")] = tokens.pop(0)
        else:
            raise SystemExit(
                f"--compare-server: {token!r} is neither a setting nor one of "
                f"{', '.join([*SERVER_FLAGS, '--app'])}"
            )
    return server, settings


def server_options(target: Target) -> list[str]:
    """gunicorn's arguments: the deployment's own configuration (this tree's, for every tree
    measured), with what the target overrides."""
    options = ["--config", str(GUNICORN_CONFIG)]
    for flag, name in SERVER_FLAGS.items():
        if name in target.server:
            options += [flag, target.server[name]]
    if target.server.get("worker_class") == "sync" and "threads" not in target.server:
        # gunicorn quietly serves sync workers with the config's threads as gthread ones.
        options += ["--threads", "1"]
    return options


def describe_server(target: Target) -> str:
    import runpy

    saved = dict(os.environ)
    try:
        os.environ.update(target.env)
        config = runpy.run_path(str(GUNICORN_CONFIG))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    worker_class = target.server.get("worker_class") or config.get("worker_class", "sync")
    workers = target.server.get("workers") or config.get("workers", 1)
    threads = target.server.get("threads") or config.get("threads", 1)
    pool = target.env.get("DATABASE_POOL_MAX_SIZE") or "0"
    shape = f"{workers} {worker_class} workers"
    if worker_class == "gthread":
        shape += f" x {threads} threads"
    extra = " ".join(
        f"{name}={value}"
        for name, value in target.env.items()
        if name.startswith(("GUNICORN_", "DATABASE_POOL_", "WEB_INITIATIONS_"))
        and name not in ("DATABASE_POOL_MAX_SIZE", "GUNICORN_GC_PAUSE_LOG")
    )
    return (
        f"{target.server['app']} on gunicorn, {shape} (deploy/gunicorn.conf.py), "
        f"DATABASE_POOL_MAX_SIZE={pool}" + (f" {extra}" if extra else "")
    )


def start_gunicorn(target: Target) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 (our own venv's programs)
        [
            str(BIN / "gunicorn"),
            *server_options(target),
            target.server["app"],
            "--bind", f"127.0.0.1:{target.port}",
            "--backlog", "2048",
            "--log-level", "warning",
        ],
        cwd=target.source,
        env=target.env,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, no large tables")
    parser.add_argument(
        "--workers", type=int, help="gunicorn workers (default: deploy/gunicorn.conf.py's)"
    )
    parser.add_argument(
        "--server-threads", type=int, help="threads per gunicorn worker (default: the config's)"
    )
    parser.add_argument("--worker-class", help="gunicorn worker class (default: the config's)")
    parser.add_argument(
        "--app",
        default="burki.wsgi:application",
        help="what gunicorn serves (burki.asgi:application with an ASGI worker class)",
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument(
        "--slow-connections",
        type=int,
        default=64,
        help="wrk connections of initiate/twilio200 (requests in flight through the 200 ms)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--duration", type=int, help="measured seconds per scenario (24; quick: 12)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns the scenarios take")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per scenario (3; quick: 2)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/burki_bench"
        ),
        help="a database the benchmark may drop and create (BENCH_DATABASE_URL)",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another copy of the project to measure in the same run (database: ..._compare)",
    )
    parser.add_argument(
        "--compare-server",
        metavar="SPEC",
        help="measure this tree served another way in the same run, e.g. "
        "'--worker-class sync --workers 4 DATABASE_POOL_MAX_SIZE=0' (database: ..._compare)",
    )
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--task-input", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        run_task(args)
        return
    args.duration = args.duration or (12 if args.quick else 24)
    args.warmup = args.warmup or (2 if args.quick else 3)
    args.load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    from cryptography.fernet import Fernet

    taken: set[int] = set()
    twilio_port = free_port(taken)
    common = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{twilio_port}",
        "ALLOWED_HOSTS": "127.0.0.1",
        # The load comes from one key: its rate limits would refuse most of it. (The cap on
        # simultaneous calls is lifted per organization in seed(), so its count still runs.)
        "API_THROTTLE_RATE": "100000000/min",
        "INITIATE_THROTTLE_RATE": "100000000/min",
        # A sandbox call hands its lifecycle to the background engine: one message to Redis, as
        # in a deployment. No worker takes them here (the calls stay live); the database is
        # emptied before and after.
        "CELERY_BROKER_URL": BROKER_URL,
        # The web tier's pool and admission, as deploy/systemd/burki-web.service sets them.
        "DATABASE_POOL_MAX_SIZE": os.environ.get("DATABASE_POOL_MAX_SIZE", "8"),
        "WEB_INITIATIONS_AT_ONCE": os.environ.get("WEB_INITIATIONS_AT_ONCE", "1"),
    }
    empty_broker()
    if args.compare_with and args.compare_server:
        raise SystemExit("--compare-with or --compare-server, not both")
    sources = [("this", ROOT, args.database_url, "")]
    if args.compare_with:
        sources.append(("compare", args.compare_with.resolve(), args.database_url + "_compare", ""))
    if args.compare_server:
        sources.append(("compare", ROOT, args.database_url + "_compare", args.compare_server))
    targets = []
    gc_logs = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    for label, source, database_url, spec in sources:
        port = free_port(taken)
        server, settings = server_settings(args, spec)
        env = {
            **common,
            **settings,
            "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "PYTHONPATH": str(source),
            # Each worker appends its full collections' pauses here (deploy/gunicorn.conf.py).
            "GUNICORN_GC_PAUSE_LOG": str(gc_logs / f"{label}.log"),
        }
        targets.append(Target(label, source, database_url, port, env, server))

    for target in targets:
        log(f"{target.label}: database {target.database_url.rsplit('/', 1)[1]}: create, migrate")
        recreate_database(target.database_url)
        subprocess.run(  # noqa: S603 (our own venv's programs)
            [str(BIN / "python"), "manage.py", "migrate", "--verbosity", "0"],
            cwd=target.source,
            env=target.env,
            check=True,
        )

    processes: list[subprocess.Popen[bytes]] = []
    fake = FakeTwilio(twilio_port)
    try:
        fake.use(0.0)  # the seed places a Twilio call
        log(f"fake Twilio on :{twilio_port}")
        for target in targets:
            log(f"{target.label}: seed")
            target.seed = Seed(**django_task(target, "seed"))
        for target in targets:
            target.gunicorn = start_gunicorn(target)
            processes.append(target.gunicorn)
            log(f"{target.label}: gunicorn on {target.base_url}")
        for target in targets:
            wait_for(f"{target.base_url}/health")

        phases: dict[str, dict[str, dict[str, Result]]] = {}
        rows: dict[str, dict[str, tuple[int, int]]] = {}
        queries: dict[str, dict[str, dict[str, int]]] = {}
        for phase in ("small", "large"):
            if phase == "large":
                if args.quick:
                    break
                for target in targets:
                    started = time.monotonic()
                    log(f"{target.label}: growing calls and ledger to {LARGE_ROWS:,} rows each")
                    django_task(target, "grow", str(target.seed.organization_id))  # type: ignore[union-attr]
                    log(f"  done in {time.monotonic() - started:.0f} s")
            rows[phase] = {t.label: tuple(django_task(t, "rows")) for t in targets}  # type: ignore[misc]
            log(f"{phase} tables:")
            phases[phase] = run_scenarios(targets, args, fake)
            queries[phase] = {
                t.label: django_task(t, "queries", json.dumps(t.seed.__dict__)) for t in targets
            }
        rss = {
            t.label: {pid: peak_rss_mib(pid) for pid in worker_pids(t.gunicorn.pid)}  # type: ignore[union-attr]
            for t in targets
        }
        args.load_at_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        fake.stop()
        empty_broker()
    print_report(args, targets, phases, rows, queries, rss)


def empty_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


if __name__ == "__main__":
    main()

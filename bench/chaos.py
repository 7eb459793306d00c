"""The chaos run: hundreds of Twilio calls through the whole service while Twilio, the network
and our own processes misbehave, and every one must be charged exactly what Twilio's own record
says. Run it with `bench/run --chaos` (options: `bench/run --chaos --help`).

It builds its own PostgreSQL database and starts, as separate processes: the service under
gunicorn (production settings), a Celery worker and its scheduler (`celery -A burki beat`) on a
Redis database of their own, and bench/fake_twilio.py in chaos mode, which the service's real
Twilio SDK talks to (TWILIO_API_BASE_URL). The fake places every call it is asked to, plays its
lifecycle, asks the answer URL for TwiML, and sends correctly signed status callbacks to the URL
each call carried: 30 % lost, 20 % twice, delayed and reordered; 10 % of creates answer only
after our time-out, the call placed anyway; 5 % of its API reads answer 503; its record of a
call's end may lag the callback.

Clients place the calls concurrently through `POST /calls/initiate`, each with an
Idempotency-Key, as a careful client would: after a 504 they ask again with the same key and
follow the call it names; some give up on a request early, or lose it with the worker serving
it, and retry with its key; some call a number again a little later; some hang their call up
(`POST /calls/{call_id}/hangup`) while it rings or talks; and some forge the end of their own
call ("completed, 0 s", signed with their own auth token). Meanwhile gunicorn workers and the
Celery worker's pool processes are killed with SIGKILL. Then the run waits for the sweep to
settle everything and compares the service's books with the fake's truth. It prints the figures
and exits non-zero if any is wrong:

  calls                  every call we recorded
  charged the truth      our status, call_sid, duration_seconds and cost_cents equal Twilio's
                         record (the organization's rate per second, rounded up to the cent);
                         a call Twilio never heard of must be failed and cost nothing
  stranded holds         calls still holding money once everything is over
  double dials           calls Twilio was asked to place more than once (by our call id), or
                         that it placed for no call of ours
  ledger                 balance and held amount equal the sums of their ledger entries (and
                         each call's entries its cost), nothing held, and the balance is the
                         top-up less the truth's cost
  hang-ups ignored       hang-ups that left a live call up at Twilio
  answers not streamed   answered calls whose answer URL did not hand them to the assistant
                         (but for calls whose end their organization forged)

and besides: every status callback answered 200, every 200 named Twilio's call_sid, and every
504's replay the same call.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

ROOT, BIN = bench.ROOT, bench.BIN
BROKER_URL = os.environ.get("BENCH_CHAOS_CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")
FROM_NUMBER = "+15550100003"
RATE_CENTS_PER_MINUTE = 10
TOP_UP_CENTS = 1_000_000
FINAL_STATES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
TIME_LIMIT_SECONDS = 60  # the assistant's maximum duration, the shortest it may be
# The service's settings for the run: a short ring, a short provider time-out, the sweep and
# reconcile every few seconds with no grace, so the whole run takes a few minutes.
SERVICE_SETTINGS = {
    "PROVIDER_TIMEOUT_SECONDS": "1",
    "CALL_RING_TIMEOUT_SECONDS": "8",
    "CALL_SWEEP_INTERVAL_SECONDS": "5",
    "CALL_SWEEP_GRACE_SECONDS": "0",
    "CALL_SWEEP_GIVE_UP_SECONDS": "60",
    "CALL_RECONCILE_INTERVAL_SECONDS": "5",
    "CALL_RECONCILE_GRACE_SECONDS": "10",
    # A request whose worker was killed leaves its key in flight: its client's retry may take
    # it over after this long (nothing was dialled), or is answered from the call it recorded.
    "IDEMPOTENCY_STALE_SECONDS": "10",
    "CALL_RATE_CENTS_PER_MINUTE": str(RATE_CENTS_PER_MINUTE),
    "API_THROTTLE_RATE": "100000000/min",
    "INITIATE_THROTTLE_RATE": "100000000/min",
}


def log(message: str) -> None:
    print(message, flush=True)


# The seed, in a child process with Django set up (`chaos.py --task seed`).


def seed(task_input: dict[str, str]) -> dict[str, Any]:
    from django.db import transaction

    from assistants.models import Assistant
    from billing.models import Balance
    from billing.services import balance_top_up
    from burki.models import Organization
    from burki.services import api_key_create
    from telephony.models import PhoneNumber, ProviderAccount

    with transaction.atomic():
        # Every call may be live at once: the cap is not what this run measures.
        org = Organization.objects.create(name="Chaos", max_concurrent_calls=10_000)
        Balance.objects.create(organization=org)
        balance_top_up(organization=org, amount_cents=TOP_UP_CENTS, memo="chaos funds")
        assistant = Assistant.objects.create(
            organization=org,
            name="Chaos assistant",
            welcome_message="Hello {{name}}.",
            max_call_duration_seconds=TIME_LIMIT_SECONDS,
        )
        account = ProviderAccount.objects.create(  # type: ignore[misc]  # secrets: a dict
            organization=org,
            provider="twilio",
            name="Chaos Twilio",
            settings={"account_sid": task_input["account_sid"]},
            secrets={"auth_token": task_input["auth_token"]},
            calls_per_second=10000,  # the fake takes any rate
        )
        PhoneNumber.objects.create(
            organization=org,
            number=FROM_NUMBER,
            provider="twilio",
            provider_account=account,
            assistant=assistant,
        )
        _, raw_key = api_key_create(organization=org, name="chaos")
    return {"api_key": raw_key, "organization_id": org.pk}


def run_task(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    print(json.dumps(seed(json.loads(args.task_input))))


# The clients.


@dataclass
class Placed:
    index: int
    to: str
    answers: list[str] = field(default_factory=list)  # every attempt, in order
    status: int = 0  # the last answer's
    call_id: str = ""
    call_sid: str = ""  # what a 200 named
    replay_mismatch: str = ""
    followed: int = 0  # GET /calls/{call_id} after a 504


@dataclass
class HangUp:
    call_id: str
    status: int = 0
    detail: str = ""


class Clients:
    def __init__(
        self, base_url: str, api_key: str, auth_token: str, args: argparse.Namespace
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.auth_token = auth_token  # the organization's own: what a forger signs with
        self.args = args
        self.rng = random.Random(args.seed + 1)  # noqa: S311 (chance, not secrets)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.placed: list[Placed] = []
        self.hang_ups: list[HangUp] = []
        self.hang_up_threads: list[threading.Thread] = []
        self.forged: list[tuple[str, int]] = []  # (call id, our answer)

    def session(self) -> Any:
        import requests

        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(self.headers)
        return self.local.session

    def chance(self, share: float) -> bool:
        with self.lock:
            return self.rng.random() < share

    def place_all(self) -> None:
        started = time.monotonic()
        spacing = self.args.placing_seconds / self.args.calls

        def place_at(index: int) -> Placed:
            time.sleep(max(0.0, started + index * spacing - time.monotonic()))
            return self.place(index)

        with ThreadPoolExecutor(max_workers=self.args.clients) as pool:
            self.placed = list(pool.map(place_at, range(self.args.calls)))

    def join(self) -> None:
        """Until every hang-up and forged end the clients had in mind is sent."""
        for thread in self.hang_up_threads:
            thread.join()

    def place(self, index: int) -> Placed:
        import requests

        number = index
        if index >= 100 and self.chance(self.args.redials):
            # The same person again, some seconds later (a campaign's second try).
            with self.lock:
                number = index - self.rng.randint(60, 90)
        placed = Placed(index=index, to=f"+1555987{number:04d}")
        body = {
            "from_phone_number": FROM_NUMBER,
            "to_phone_number": placed.to,
            "variables": {"name": f"Caller {index}"},
        }
        headers = {"Idempotency-Key": f"chaos-{index}-{uuid.uuid4().hex}"}
        impatient = self.chance(self.args.impatient)
        first_504 = ""
        give_up_at = time.monotonic() + 120
        attempt = 0
        while time.monotonic() < give_up_at:
            attempt += 1
            # An impatient client stops waiting before any answer can come, then asks again.
            timeout = 0.02 if impatient and attempt == 1 else 30
            try:
                response = self.session().post(
                    f"{self.base_url}/calls/initiate", json=body, headers=headers, timeout=timeout
                )
            except requests.Timeout:
                placed.answers.append("gave up")
                time.sleep(0.2)
                continue
            except requests.ConnectionError:  # the worker serving it was killed
                placed.answers.append("connection lost")
                time.sleep(0.5)
                continue
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            placed.answers.append(f"{response.status_code}{' replayed' if replayed else ''}")
            placed.status = response.status_code
            answer = response.json()
            placed.call_id = answer.get("call_id", placed.call_id)
            placed.call_sid = answer.get("call_sid", "")
            if response.status_code == 409:  # the first request still runs, or its call waits
                time.sleep(min(3.0, 0.3 * attempt))
                continue
            if response.status_code == 504:
                if not first_504:
                    # The README's advice: ask again with the same key (the same answer, no
                    # second dial), then follow the call it names.
                    first_504 = placed.call_id
                    time.sleep(0.2)
                    continue
                if placed.call_id != first_504 or not replayed:
                    placed.replay_mismatch = f"{first_504} then {placed.call_id}, {replayed=}"
                followed = self.session().get(f"{self.base_url}/calls/{placed.call_id}")
                placed.followed = followed.status_code
            break
        if placed.status in (200, 504) and placed.call_id and self.chance(self.args.hang_ups):
            self.later(self.hang_up, placed.call_id)
        elif placed.status == 200 and self.chance(self.args.forgers):
            self.later(self.forge_the_end, placed.call_id, placed.call_sid)
        return placed

    def later(self, action: Any, *args: str) -> None:
        with self.lock:
            delay = self.rng.uniform(0.5, 30)
        thread = threading.Thread(target=action, args=(*args, delay))
        thread.start()
        with self.lock:
            self.hang_up_threads.append(thread)

    def forge_the_end(self, call_id: str, call_sid: str, delay: float) -> None:
        """The organization signs "completed, 0 s" itself, with its own auth token, while the
        call still rings or talks: it must not lower the bill."""
        from twilio.request_validator import RequestValidator

        time.sleep(delay)
        url = f"{self.base_url}/webhooks/calls/{call_id}/status"
        params = {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "0"}
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        response = self.session().post(
            url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
        )
        with self.lock:
            self.forged.append((call_id, response.status_code))

    def hang_up(self, call_id: str, delay: float) -> None:
        import requests

        time.sleep(delay)
        url = f"{self.base_url}/calls/{call_id}/hangup"
        try:
            response = self.session().post(url, timeout=30)
        except requests.ConnectionError:  # the worker serving it was killed: ask again
            response = self.session().post(url, timeout=30)
        hang_up = HangUp(call_id=call_id, status=response.status_code)
        body = response.json()
        hang_up.detail = body.get("status") or body.get("detail", "")
        with self.lock:
            self.hang_ups.append(hang_up)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Killer:
    """SIGKILL, as a crash or the kernel's OOM killer would: gunicorn workers while calls are
    being placed (their master starts new ones), and the Celery worker's pool processes while
    calls settle (its tasks are acknowledged only once run, so another takes them up)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.killed: Counter[str] = Counter()
        self.threads: list[threading.Thread] = []

    def every(self, name: str, master: int, times: int, start: float, spacing: float) -> None:
        def run() -> None:
            for n in range(times):
                time.sleep(max(0.0, start + n * spacing - time.monotonic()))
                pids = children(master)
                if pids:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    self.killed[name] += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)


# The run.


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 (our own venv's programs)
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def fake_report(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/_chaos/report"
    with urllib.request.urlopen(url, timeout=10) as response:
        report: dict[str, Any] = json.load(response)
    return report


def books(database_url: str, organization_id: int) -> dict[str, Any]:
    """Our side, straight from the database: every call, the balance, the ledger's sums."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        calls = conn.execute(
            "SELECT id::text AS id, call_sid, status, duration_seconds, cost_cents, hold_cents,"
            " settled_by, answered_at IS NOT NULL AS answered FROM calls_call"
            " WHERE organization_id = %s",
            (organization_id,),
        ).fetchall()
        balance = conn.execute(
            "SELECT balance_cents, held_cents, open_holds FROM billing_balance"
            " WHERE organization_id = %s",
            (organization_id,),
        ).fetchone()
        ledger = conn.execute(
            "SELECT coalesce(sum(amount_cents), 0) AS amount,"
            " coalesce(sum(held_change_cents), 0) AS held FROM billing_ledgerentry"
            " WHERE organization_id = %s",
            (organization_id,),
        ).fetchone()
        sources = conn.execute(
            "SELECT e.source, count(*) AS n FROM calls_callevent e"
            " JOIN calls_call c ON c.id = e.call_id WHERE c.organization_id = %s"
            " GROUP BY e.source ORDER BY e.source",
            (organization_id,),
        ).fetchall()
        per_call = conn.execute(
            "SELECT call_id::text AS call_id, sum(amount_cents) AS amount,"
            " sum(held_change_cents) AS held FROM billing_ledgerentry"
            " WHERE organization_id = %s AND call_id IS NOT NULL GROUP BY call_id",
            (organization_id,),
        ).fetchall()
    return {
        "calls": calls,
        "balance": balance,
        "ledger": ledger,
        "per_call": {row["call_id"]: row for row in per_call},
        "event_sources": {row["source"]: row["n"] for row in sources},
    }


def cost_cents(seconds: int) -> int:
    """The README's rule, written out again here: per second, rounded up to the cent."""
    return -(-seconds * RATE_CENTS_PER_MINUTE // 60)


def wait_until_over(
    args: argparse.Namespace, fake_port: int, organization_id: int, deadline: float
) -> float:
    """Until every call is settled and the fake has nothing more to send; returns when."""
    last_line = 0.0
    while True:
        ours = books(args.database_url, organization_id)
        unsettled = sum(c["cost_cents"] is None for c in ours["calls"])
        twilio = fake_report(fake_port)
        now = time.monotonic()
        if not unsettled and not twilio["live"] and not twilio["in_flight"]:
            return now
        if now - last_line > 15:
            log(
                f"  {unsettled} of {len(ours['calls'])} calls unsettled, "
                f"{ours['balance']['held_cents']} cents held; Twilio: {twilio['live']} live calls, "
                f"{twilio['in_flight']} callbacks to come"
            )
            last_line = now
        if now > deadline:
            log("  deadline passed: judging the books as they are")
            return now
        time.sleep(2)


def judge(
    ours: dict[str, Any], twilio: dict[str, Any], clients: Clients
) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """The figures (name, value, right) and what is wrong, call by call."""
    problems: list[str] = []
    truth_by_id: dict[str, dict[str, Any]] = {}
    for call in twilio["calls"]:
        truth_by_id.setdefault(call["call_id"], call)
    calls = ours["calls"]
    right = 0
    truth_total = 0
    for call in calls:
        truth = truth_by_id.get(call["id"])
        if truth is None:  # never reached Twilio: nothing placed, nothing charged
            expected = ("", "failed", 0, 0)
        else:
            expected = (
                truth["sid"],
                truth["status"],
                truth["duration"] or 0,
                cost_cents(truth["duration"] or 0),
            )
        got = (
            call["call_sid"],
            call["status"],
            call["duration_seconds"] or 0,
            call["cost_cents"],
        )
        truth_total += expected[3]
        if got == expected:
            right += 1
        else:
            problems.append(
                f"call {call['id']}: ours (sid, status, seconds, cents) {got}, Twilio's "
                f"{expected}; settled by {call['settled_by']}, answered {call['answered']}"
            )
    ids = {c["id"] for c in calls}
    strays = [c for c in twilio["calls"] if c["call_id"] not in ids]
    problems += [f"Twilio placed {c['sid']} for no call of ours ({c['call_id']!r})" for c in strays]
    double = {cid: n for cid, n in twilio["creates"].items() if n > 1}
    problems += [f"call {cid} dialled {n} times" for cid, n in double.items()]
    stranded = [c for c in calls if c["cost_cents"] is None]
    problems += [f"call {c['id']} still holds {c['hold_cents']} cents" for c in stranded]

    balance, ledger = ours["balance"], ours["ledger"]
    ledger_ok = (
        ledger["amount"] == balance["balance_cents"]
        and ledger["held"] == balance["held_cents"] == 0
        and balance["open_holds"] == 0
        and balance["balance_cents"] == TOP_UP_CENTS - truth_total
    )
    for call in calls:
        entries = ours["per_call"].get(call["id"], {"amount": 0, "held": 0})
        if entries["amount"] != -(call["cost_cents"] or 0) or entries["held"] != 0:
            ledger_ok = False
            problems.append(f"call {call['id']}: its ledger entries sum to {entries}")
    if not ledger_ok:
        problems.append(
            f"ledger: balance {balance}, entries sum to {ledger}, "
            f"top-up {TOP_UP_CENTS} less the truth's cost {truth_total}"
        )

    ignored = [
        (c["call_id"], h)
        for c in twilio["calls"]
        for h in c["hang_ups"]
        if h["effect"] == "none" and h["state"] not in FINAL_STATES
    ]
    problems += [f"call {cid}: hang-up {h} left it up" for cid, h in ignored]
    # A call whose end its organization forged is over by our books: its answer hangs up.
    forged = {call_id for call_id, _ in clients.forged}
    not_streamed = [
        c
        for c in twilio["calls"]
        if c["answer"] and c["answer"] != "stream" and c["call_id"] not in forged
    ]
    problems += [f"call {c['call_id']}: its answer URL gave {c['answer']}" for c in not_streamed]
    truth_sids = {c["call_id"]: c["sid"] for c in twilio["calls"]}
    misnamed = [
        p for p in clients.placed if p.status == 200 and p.call_sid != truth_sids.get(p.call_id)
    ]
    problems += [f"call {p.call_id}: its 200 named {p.call_sid!r}" for p in misnamed]
    mismatched = [p for p in clients.placed if p.replay_mismatch]
    problems += [f"call {p.call_id}: the 504's replay: {p.replay_mismatch}" for p in mismatched]
    # Only an answer counts: a callback a killed worker was serving is lost, as any other.
    refused = {
        k: v
        for k, v in twilio["callback_answers"].items()
        if k.startswith("HTTP ") and k != "HTTP 200"
    }
    problems += [f"status callbacks answered {k}: {v}" for k, v in refused.items()]

    figures = [
        ("calls", str(len(calls)), len(calls) >= 1),
        ("charged the truth", f"{right}/{len(calls)}", right == len(calls)),
        ("stranded holds", str(len(stranded)), not stranded),
        ("double dials", str(len(double) + len(strays)), not double and not strays),
        (
            "ledger",
            (
                f"balance {balance['balance_cents']} = top-up {TOP_UP_CENTS} - charged "
                f"{TOP_UP_CENTS - balance['balance_cents']} (truth: {truth_total}); "
                f"entries sum to {ledger['amount']}; held {balance['held_cents']}, "
                f"open holds {balance['open_holds']}"
            ),
            ledger_ok,
        ),
        ("hang-ups ignored", str(len(ignored)), not ignored),
        ("answers not streamed", str(len(not_streamed)), not not_streamed),
    ]
    return figures, problems


def print_story(ours: dict[str, Any], twilio: dict[str, Any], clients: Clients) -> None:
    stats = twilio["stats"]
    log("")
    log(
        f"Twilio: {stats.get('creates', 0)} creates, {stats.get('creates answered late', 0)} "
        f"answered after our time-out; {stats.get('fetches', 0)} fetches and "
        f"{stats.get('lists', 0)} lists, {stats.get('reads answered 503', 0)} answered 503; "
        f"{stats.get('updates', 0)} hang-ups"
    )
    log(
        f"  status callbacks: {stats.get('callbacks', 0)} due, "
        f"{stats.get('callbacks lost', 0)} lost, {stats.get('callbacks sent twice', 0)} sent "
        f"twice, {stats.get('deliveries', 0)} delivered ({stats.get('deliveries delayed', 0)} "
        f"delayed, {stats.get('deliveries out of order', 0)} out of order); our answers: "
        + ", ".join(f"{k} x {v}" for k, v in sorted(twilio["callback_answers"].items()))
    )
    outcomes = Counter(c["status"] for c in twilio["calls"])
    twiml = Counter(c["answer"] for c in twilio["calls"] if c["answer"])
    log(
        "  truth: "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + "; answers: "
        + ", ".join(f"{k} {v}" for k, v in sorted(twiml.items()))
    )
    answers = Counter(" -> ".join(squeeze(p.answers)) for p in clients.placed)
    log("clients: " + "; ".join(f"{k} x {v}" for k, v in answers.most_common()))
    hang_ups = Counter(f"{h.status} {h.detail}" for h in clients.hang_ups)
    effects = Counter(
        f"{h['state']}: {h['status']} {h['effect']}" for c in twilio["calls"] for h in c["hang_ups"]
    )
    log(
        f"  hang-ups: {len(clients.hang_ups)} asked, answered "
        + ", ".join(f"{k} x {v}" for k, v in sorted(hang_ups.items()))
        + "; at Twilio (state: asked effect) "
        + ", ".join(f"{k} x {v}" for k, v in sorted(effects.items()))
    )
    settled = Counter(str(c["settled_by"]) for c in ours["calls"])
    forged = Counter(status for _, status in clients.forged)
    log(
        f"  forged ends (signed with the organization's own token): {len(clients.forged)}, "
        "answered " + ", ".join(f"{k} x {v}" for k, v in sorted(forged.items()))
    )
    log(
        "ours: settled by "
        + ", ".join(f"{k} {v}" for k, v in sorted(settled.items()))
        + "; events recorded from "
        + ", ".join(f"{k} {v}" for k, v in ours["event_sources"].items())
    )
    killed = twilio.get("killed", {})
    log("killed (SIGKILL): " + (", ".join(f"{k} x {v}" for k, v in killed.items()) or "nothing"))


def squeeze(answers: list[str]) -> list[str]:
    """Repeats counted: ["409", "409", "200"] -> ["409 x2", "200"]."""
    out: list[str] = []
    for answer, group in itertools.groupby(answers):
        n = len(list(group))
        out.append(answer if n == 1 else f"{answer} x{n}")
    return out


# What Celery logs when a pool process dies under a task (acknowledged late, the task is handed
# to another process): the line, then a traceback twice over.
WORKER_LOST = "Task handler raised error: WorkerLostError"


def count_tracebacks(log_path: Path) -> tuple[int, int]:
    """Tracebacks a process logged, and tasks a killed pool process was running."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = text.splitlines()
    lost = sum(WORKER_LOST in line for line in lines)
    return sum(line.startswith("Traceback") for line in lines) - 2 * lost, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=240, help="calls to place (240)")
    parser.add_argument("--placing-seconds", type=float, default=40, help="spread over (40)")
    parser.add_argument("--clients", type=int, default=12, help="clients at once (12)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (4)")
    parser.add_argument("--celery-concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--seed", type=int, default=20261210, help="the fake's and the clients'")
    parser.add_argument("--impatient", type=float, default=0.1, help="clients who give up early")
    parser.add_argument("--hang-ups", type=float, default=0.1, help="calls their client hangs up")
    parser.add_argument("--forgers", type=float, default=0.05, help="forged 'completed, 0 s'")
    parser.add_argument("--drop", type=float, default=0.3, help="status callbacks lost (0.3)")
    parser.add_argument("--duplicate", type=float, default=0.2, help="sent twice (0.2)")
    parser.add_argument("--late", type=float, default=0.1, help="creates answered late (0.1)")
    parser.add_argument("--redials", type=float, default=0.1, help="calls to a number again")
    parser.add_argument("--kill-web", type=int, default=6, help="gunicorn workers killed (6)")
    parser.add_argument("--kill-celery", type=int, default=3, help="pool processes killed (3)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_CHAOS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/burki_chaos"
        ),
        help="a database the run may drop and create (BENCH_CHAOS_DATABASE_URL)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--task-input", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        run_task(args)
        return

    from cryptography.fernet import Fernet

    began = time.monotonic()
    taken: set[int] = set()
    fake_port, web_port = bench.free_port(taken), bench.free_port(taken)
    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    logs = Path(tempfile.mkdtemp(prefix="burki-chaos-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": args.database_url,
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{fake_port}",
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_BEAT_SCHEDULE_FILENAME": str(logs / "celerybeat-schedule"),
        "PYTHONPATH": str(ROOT),
        **SERVICE_SETTINGS,
    }
    log(f"database {args.database_url.rsplit('/', 1)[1]}: create, migrate; broker {BROKER_URL}")
    bench.recreate_database(args.database_url)
    subprocess.run(  # noqa: S603 (our own venv's programs)
        [str(BIN / "python"), "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    empty_broker()
    seeded = json.loads(
        subprocess.run(  # noqa: S603 (our own script)
            [
                str(BIN / "python"),
                str(ROOT / "bench" / "chaos.py"),
                "--task",
                "seed",
                "--task-input",
                json.dumps({"account_sid": account_sid, "auth_token": auth_token}),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            start(
                [
                    str(BIN / "python"), str(ROOT / "bench" / "fake_twilio.py"), str(fake_port),
                    "--chaos", "--account-sid", account_sid, "--auth-token", auth_token,
                    "--seed", str(args.seed), "--drop", str(args.drop),
                    "--duplicate", str(args.duplicate), "--late", str(args.late),
                    "--late-by", str(float(SERVICE_SETTINGS["PROVIDER_TIMEOUT_SECONDS"]) + 1.5),
                ],
                env,
                logs / "fake_twilio.log",
            )
        )  # fmt: skip
        processes.append(
            start(
                [
                    str(BIN / "gunicorn"), "burki.wsgi:application",
                    "--bind", f"127.0.0.1:{web_port}", "--workers", str(args.workers),
                    "--worker-class", "sync", "--log-level", "warning",
                ],
                env,
                logs / "gunicorn.log",
            )
        )  # fmt: skip
        gunicorn = processes[-1]
        # The scheduler in a process of its own (`celery -A burki beat`), so that the worker's
        # pool processes are the only children to kill.
        processes.append(
            start(
                [
                    str(BIN / "celery"), "-A", "burki", "worker",
                    "--concurrency", str(args.celery_concurrency), "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                env,
                logs / "celery.log",
            )
        )  # fmt: skip
        worker = processes[-1]
        processes.append(
            start(
                [str(BIN / "celery"), "-A", "burki", "beat", "--loglevel", "INFO"],
                env,
                logs / "beat.log",
            )
        )
        bench.wait_for_port(fake_port)
        bench.wait_for(f"http://127.0.0.1:{web_port}/health")
        log(
            f"gunicorn on :{web_port} ({args.workers} workers), a Celery worker "
            f"({args.celery_concurrency} processes) and beat, the chaos Twilio on :{fake_port}; "
            f"logs in {logs}"
        )

        clients = Clients(f"http://127.0.0.1:{web_port}", seeded["api_key"], auth_token, args)
        log(f"placing {args.calls} calls over {args.placing_seconds:.0f} s ...")
        placing = time.monotonic()
        killer = Killer(random.Random(args.seed + 2))  # noqa: S311 (chance, not secrets)
        web_spacing = args.placing_seconds / (args.kill_web + 1)
        killer.every(
            "gunicorn worker", gunicorn.pid, args.kill_web, placing + web_spacing, web_spacing
        )
        killer.every("celery pool process", worker.pid, args.kill_celery, placing + 5, 20)
        clients.place_all()
        placed = time.monotonic()
        log(f"  placed in {placed - placing:.0f} s; waiting for every call to be over and settled")
        # Every call is over at Twilio by its ring time, time limit and a minute; the sweep
        # then takes what its callbacks did not settle, within an interval.
        deadline = placed + TIME_LIMIT_SECONDS + 8 + 60 + 120
        clients.join()
        over = wait_until_over(args, fake_port, seeded["organization_id"], deadline)
        time.sleep(3)  # a last duplicate on its way must change nothing
        ours = books(args.database_url, seeded["organization_id"])
        twilio = fake_report(fake_port)
        twilio["killed"] = dict(killer.killed)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        empty_broker()

    figures, problems = judge(ours, twilio, clients)
    print_story(ours, twilio, clients)
    names = ("gunicorn.log", "celery.log", "beat.log", "fake_twilio.log")
    counted = {name: count_tracebacks(logs / name) for name in names}
    tracebacks = {name: n for name, (n, _) in counted.items()}
    log(
        "tracebacks logged: "
        + ", ".join(f"{name} {n}" for name, n in tracebacks.items())
        + f"; tasks a killed pool process was running (run again): "
        f"{sum(lost for _, lost in counted.values())}"
    )
    log("")
    width = max(len(name) for name, _, _ in figures)
    for name, value, ok in figures:
        log(f"{name:<{width}}  {value}{'' if ok else '   <-- WRONG'}")
    for problem in problems[:30]:
        log(f"  {problem}")
    if len(problems) > 30:
        log(f"  ... and {len(problems) - 30} more")
    passed = all(ok for _, _, ok in figures) and not problems
    log(
        f"chaos: {'PASS' if passed else 'FAIL'}; placing {placed - placing:.0f} s, settling "
        f"{over - placed:.0f} s after the last call, {time.monotonic() - began:.0f} s in all"
    )
    if passed and not args.keep_logs and not any(tracebacks.values()):
        for path in logs.iterdir():
            path.unlink()
        logs.rmdir()
    else:
        log(f"logs: {logs}")
    sys.exit(0 if passed else 1)


def empty_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


if __name__ == "__main__":
    main()

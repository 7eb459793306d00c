"""How many initiations a second one organization's Balance row lets through.

Every initiation of an organization takes its Balance row's lock (the hold statement) and keeps
it until the commit, so one organization's initiations are serialised on that row whatever the
web tier does. This measures the row alone: pgbench replays the SQL of an initiation's
transaction (the call's INSERT, the hold statement with its ledger row, the commit), rendered by
the service's own code, from many clients at once, against one organization and then spread over
several; Python is not in the loop.

  .venv/bin/python bench/hot_balance.py [--clients 8,16,32] [--seconds 10] [--spread 8]

It uses its own database (burki_bench_hot, dropped and created). Take the shared lock on a
shared machine (README, "Benchmark").
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
# Values no real row has, replaced by pgbench variables once the SQL is rendered.
CALL_ID = uuid.UUID("00000000-0000-4000-8000-00000000c411")
ORGANIZATION_ID = 987654321


def pgbench() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise SystemExit("pgbench not found (Debian: postgresql-client or the server package)")


def render_transaction(organizations: int) -> tuple[str, int]:
    """The initiation's transaction as a pgbench script, and the first organization's id.
    Runs in a child process with Django set up on the benchmark's database."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from assistants.models import Assistant
    from billing.models import Balance
    from billing.services import balance_hold_call, balance_top_up, cost_cents
    from burki.models import Organization
    from calls.models import Call
    from telephony.models import PhoneNumber

    orgs = []
    for n in range(organizations):
        org = Organization.objects.create(name=f"Hot {n}", max_concurrent_calls=10**9)
        Balance.objects.create(organization=org)
        balance_top_up(organization=org, amount_cents=10**13, memo="benchmark funds")
        orgs.append(org)
    first = orgs[0]
    assistant = Assistant.objects.create(organization=first, name="Hot", welcome_message="Hi.")
    number = PhoneNumber.objects.create(
        organization=first, number="+15550109999", provider="sandbox", assistant=assistant
    )
    assert [o.pk for o in orgs] == list(range(first.pk, first.pk + organizations))

    # The statements as call_initiate sends them, for a call whose id and organization are
    # placeholders: rendered, never committed (no such organization: the hold matches no row,
    # and the foreign keys are checked at the commit that never comes).
    from django.db import transaction

    from billing.errors import InsufficientBalance

    seconds, rate = assistant.max_call_duration_seconds, 10
    with CaptureQueriesContext(connection) as queries:
        try:
            with transaction.atomic():
                Call(
                    id=CALL_ID,
                    organization_id=ORGANIZATION_ID,
                    phone_number=number,
                    from_number=str(number.number),
                    to_number="+15559876543",
                    assistant=assistant,
                    provider="sandbox",
                    welcome_message="Hi.",
                    time_limit_seconds=seconds,
                    rate_cents_per_minute=rate,
                    hold_cents=cost_cents(seconds=seconds, rate_cents_per_minute=rate),
                ).save(force_insert=True)
                balance_hold_call(
                    organization_id=ORGANIZATION_ID,
                    call_id=CALL_ID,
                    rate_cents_per_minute=rate,
                    max_seconds=seconds,
                    max_open_holds=10**9,
                    check_room=lambda: None,
                )
        except InsufficientBalance:
            pass
    statements = [q["sql"].strip() for q in queries.captured_queries]
    insert = next(s for s in statements if s.startswith('INSERT INTO "calls_call"'))
    hold = next(s for s in statements if s.startswith("WITH claimed AS"))

    def placeholders(sql: str) -> str:
        sql = sql.replace(f"'{CALL_ID.hex}'::uuid", "':cid'::uuid")
        sql = re.sub(rf"\b{ORGANIZATION_ID}\b", ":org", sql)
        return re.sub(r"'[0-9-]+ [0-9:.]+\+00:00'::timestamptz", "now()", sql)

    script = "\n".join(
        [
            f"\\set org {first.pk} + random(0, :spread - 1)",
            "SELECT gen_random_uuid() AS cid \\gset",
            "BEGIN;",
            placeholders(insert) + ";",
            placeholders(hold) + ";",
            "COMMIT;",
            "",
        ]
    )
    assert ":cid" in script and ":org" in script and str(ORGANIZATION_ID) not in script
    return script, first.pk


class _Rollback(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="8,16,32", help="pgbench clients, comma-separated")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--spread", type=int, default=8, help="organizations to spread over")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/burki_bench_hot"
    )
    parser.add_argument("--render", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        script, _first = render_transaction(args.spread)
        print(script)
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from cryptography.fernet import Fernet

    import bench

    bench.recreate_database(args.database_url)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": args.database_url,
        "PYTHONPATH": str(ROOT),
    }
    python = str(BIN / "python")
    subprocess.run(  # noqa: S603 (our own venv's programs)
        [python, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True
    )
    script = subprocess.run(  # noqa: S603
        [python, __file__, "--render", "--spread", str(args.spread)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    url = args.database_url.replace("postgres://", "postgresql://", 1)
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write(script)
        file.flush()
        for clients in [int(c) for c in args.clients.split(",")]:
            for spread in (1, args.spread):
                done = subprocess.run(  # noqa: S603
                    [
                        pgbench(), "--no-vacuum", "--protocol", "simple",
                        "--client", str(clients), "--jobs", "2",
                        "--time", str(args.seconds),
                        "--define", f"spread={spread}",
                        "--file", file.name, url,
                    ],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                tps = re.search(r"tps = ([\d.]+)", done.stdout)
                latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
                failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
                print(
                    f"clients {clients:>3}  organizations {spread:>2}  "
                    f"{float(tps.group(1)) if tps else 0:8.0f} initiations/s  "
                    f"latency {latency.group(1) if latency else '?'} ms  "
                    f"failed {failed.group(1) if failed else '?'}"
                )


if __name__ == "__main__":
    main()

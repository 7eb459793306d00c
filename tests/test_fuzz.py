"""schemathesis against the live app: the real server (gunicorn) on its own PostgreSQL database,
migrated and seeded with the demo data set, fuzzed through the public schema it serves.

Every operation in the schema is tested; no response may be a 5xx, have a status the schema does
not document, or a body that does not match it. Afterwards the money still reconciles.
Run it alone with `bin/test tests/test_fuzz.py`.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PORTS = range(28000, 29000)
# Bounded and seeded: the same cases on every run, under a minute on a small busy machine.
MAX_EXAMPLES = 100
SEED = 20261125
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
OPERATIONS = {
    ("GET", "/billing/balance"),
    ("GET", "/billing/ledger"),
    ("GET", "/calls"),
    ("GET", "/calls/{call_id}"),
    ("POST", "/calls/{call_id}/hangup"),
    ("POST", "/calls/{call_id}/transfer"),
    ("POST", "/calls/initiate"),
    ("GET", "/webhook-endpoints"),
    ("POST", "/webhook-endpoints"),
    ("GET", "/webhook-endpoints/{endpoint_id}"),
    ("PATCH", "/webhook-endpoints/{endpoint_id}"),
    ("DELETE", "/webhook-endpoints/{endpoint_id}"),
    ("POST", "/webhook-endpoints/{endpoint_id}/rotate-secret"),
    ("GET", "/webhook-endpoints/{endpoint_id}/deliveries"),
    ("POST", "/webhook-events/{event_id}/redeliver"),
    ("GET", "/campaigns"),
    ("POST", "/campaigns"),
    ("GET", "/campaigns/{campaign_id}"),
    ("GET", "/campaigns/{campaign_id}/recipients"),
    ("POST", "/campaigns/{campaign_id}/recipients"),
    ("POST", "/campaigns/{campaign_id}/start"),
    ("POST", "/campaigns/{campaign_id}/pause"),
    ("POST", "/campaigns/{campaign_id}/resume"),
    ("POST", "/campaigns/{campaign_id}/cancel"),
    ("GET", "/do-not-call"),
    ("POST", "/do-not-call"),
    ("DELETE", "/do-not-call/{number}"),
}
# The operations on a campaign, each given a campaign of its own in the status it acts on (no
# operation would find one by chance): (operation, the actions that bring a draft there).
CAMPAIGN_OPERATIONS = {
    "GET /campaigns/{campaign_id}": [],
    "GET /campaigns/{campaign_id}/recipients": [],
    "POST /campaigns/{campaign_id}/recipients": [],
    "POST /campaigns/{campaign_id}/start": [],
    "POST /campaigns/{campaign_id}/pause": ["start"],
    "POST /campaigns/{campaign_id}/resume": ["start", "pause"],
    "POST /campaigns/{campaign_id}/cancel": [],
}
LISTED_NUMBER = "+15559870100"  # on the do-not-call list, for its DELETE
# Limits far above what one fuzz run sends: a throttled request never reaches the code under
# test, so a run that mostly got 429s would prove nothing. The limits have tests of their own.
NO_LIMITS = {
    "API_THROTTLE_RATE": "1000000/min",
    "INITIATE_THROTTLE_RATE": "1000000/min",
    "MAX_CONCURRENT_CALLS": "1000000",
    # Counters in the server's own memory, not a Redis this machine's other runs share.
    "CACHE_URL": "locmemcache://",
}


@dataclass
class LiveApp:
    url: str
    database_url: str
    api_key: str
    access_log: Path
    server_log: Path
    event_id: str
    call_id: str  # a call to hang up
    answered_call_id: str  # a call in progress, to transfer
    campaign_ids: dict[str, str]


def free_port() -> int:
    ports = list(PORTS)
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 28000-28999")


def fuzz_database_url() -> str:
    """A database of its own beside the test database, named after it."""
    parts = urlsplit(os.environ["DATABASE_URL"])  # PostgreSQL: tests/settings.py insists
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_fuzz"))


def recreate(database_url: str) -> None:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop(database_url: str) -> None:
    parts = urlsplit(database_url)
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer within 30 s:\n{log.read_text()[-3000:]}")


def start_server(
    env: dict[str, str], access_log: Path, server_log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn on a free port; another one if someone takes the port first."""
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with server_log.open("wb") as output:
            server = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "burki.wsgi",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--access-logfile",
                    str(access_log),
                    "--access-logformat",
                    # The request line as sent (still percent-encoded): a decoded path may
                    # hold a fuzzed space or newline.
                    "%(s)s %(r)s",
                ],
                env={**env, "PUBLIC_BASE_URL": url},
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_up(url, server, server_log)
        except RuntimeError:
            if server.poll() is None:
                server.kill()
                server.wait()
                raise
            continue
        return server, url
    raise RuntimeError(f"the server would not start:\n{server_log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    database_url = fuzz_database_url()
    recreate(database_url)
    logs = tmp_path_factory.mktemp("live")
    env = {
        **os.environ,
        # The production settings, not the test suite's.
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "SECRET_KEY": "fuzz-" + Fernet.generate_key().decode(),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": database_url,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        # No worker runs beside this server: what it hands the background engine (sandbox
        # lifecycles) goes to a broker in its own memory and is dropped with it.
        "CELERY_BROKER_URL": "memory://",
        **NO_LIMITS,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(  # noqa: S603
        [*manage, "migrate", "--verbosity", "0"], env=env, check=True, cwd=ROOT
    )
    seeded = subprocess.run(  # noqa: S603
        [*manage, "seed_demo", "--json"], env=env, check=True, cwd=ROOT, capture_output=True
    )
    demo = json.loads(seeded.stdout)
    api_key = demo["api_key"]

    access_log, server_log = logs / "access.log", logs / "server.log"
    server, url = start_server(env, access_log, server_log)
    try:
        # One call, so that the operations on an event have an event to work on, and one in
        # progress to transfer (no worker plays the sandbox's script here, so it is answered
        # by hand). Each operation gets its own: a hang-up must not end the call to transfer.
        call_id, answered_call_id = (
            place_call(url, api_key, demo["from_phone_number"]) for _ in range(2)
        )
        event_id = first_event_of(database_url, call_id)
        answer_call(database_url, answered_call_id)
        campaign_ids = {
            operation: make_campaign(url, api_key, demo["from_phone_number"], actions)
            for operation, actions in CAMPAIGN_OPERATIONS.items()
        }
        api(url, api_key, "/do-not-call", {"number": LISTED_NUMBER})
        yield LiveApp(
            url,
            database_url,
            api_key,
            access_log,
            server_log,
            event_id,
            call_id,
            answered_call_id,
            campaign_ids,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        drop(database_url)


def api(url: str, api_key: str, path: str, body: object | None) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 - our own server on loopback
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:  # noqa: S310
        return dict(json.load(answer))


def make_campaign(url: str, api_key: str, from_number: str, actions: list[str]) -> str:
    body = {
        "name": "Fuzz",
        "from_phone_number": from_number,
        "welcome_message": "Hello.",
        "recipients": [{"to_phone_number": "+15559870001"}],
    }
    campaign_id = str(api(url, api_key, "/campaigns", body)["campaign_id"])
    for action in actions:
        api(url, api_key, f"/campaigns/{campaign_id}/{action}", None)
    return campaign_id


def responses_seen(access_log: Path) -> list[tuple[str, str, int]]:
    """(method, operation path, status) of every request the server answered."""
    seen = []
    for line in access_log.read_text().splitlines():
        status, method, target, _version = line.split(" ")
        path = target.split("?", 1)[0]
        path = re.sub(r"^/calls/[0-9a-f-]{36}(/hangup|/transfer)?$", r"/calls/{call_id}\1", path)
        path = re.sub(r"^/webhook-endpoints/[^/]+", "/webhook-endpoints/{endpoint_id}", path)
        path = re.sub(r"^/webhook-events/[^/]+", "/webhook-events/{event_id}", path)
        path = re.sub(r"^/campaigns/[0-9a-f-]{36}", "/campaigns/{campaign_id}", path)
        path = re.sub(r"^/do-not-call/.+", "/do-not-call/{number}", path)
        seen.append((method, path, int(status)))
    return seen


def place_call(url: str, api_key: str, from_number: str) -> str:
    call = urllib.request.Request(  # noqa: S310 - our own server on loopback
        url + "/calls/initiate",
        data=json.dumps(
            {"from_phone_number": from_number, "to_phone_number": "+15559876543"}
        ).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(call) as answer:  # noqa: S310
        return str(json.load(answer)["call_id"])


def answer_call(database_url: str, call_id: str) -> None:
    parts = urlsplit(database_url)
    with psycopg.connect(urlunsplit(parts._replace(scheme="postgresql"))) as connection:
        connection.execute(
            "UPDATE calls_call SET status = 'in-progress', answered_at = now() WHERE id = %s",
            (call_id,),
        )


def first_event_of(database_url: str, call_id: str) -> str:
    parts = urlsplit(database_url)
    with psycopg.connect(urlunsplit(parts._replace(scheme="postgresql"))) as connection:
        row = connection.execute(
            "SELECT id FROM webhooks_webhookevent WHERE subject_id = %s ORDER BY sequence",
            (call_id,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def money_mismatches(database_url: str) -> list[tuple[object, ...]]:
    """Organizations whose ledger does not add up to their balance and open holds."""
    query = """
        SELECT b.organization_id, b.balance_cents, b.held_cents, l.amount, l.held, c.open_holds
        FROM billing_balance b
        CROSS JOIN LATERAL (
            SELECT COALESCE(SUM(amount_cents), 0) AS amount,
                   COALESCE(SUM(held_change_cents), 0) AS held
            FROM billing_ledgerentry WHERE organization_id = b.organization_id) l
        CROSS JOIN LATERAL (
            SELECT COALESCE(SUM(hold_cents), 0) AS open_holds
            FROM calls_call WHERE organization_id = b.organization_id AND cost_cents IS NULL) c
        WHERE l.amount <> b.balance_cents OR l.held <> b.held_cents
           OR c.open_holds <> b.held_cents OR b.held_cents < 0 OR b.held_cents > b.balance_cents
    """
    parts = urlsplit(database_url)
    with psycopg.connect(urlunsplit(parts._replace(scheme="postgresql"))) as connection:
        return connection.execute(query).fetchall()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_app: LiveApp, tmp_path: Path
) -> None:
    schema_url = live_app.url + "/api/schema/?format=json"
    with urllib.request.urlopen(schema_url) as response:  # noqa: S310
        operations = {
            (method.upper(), path)
            for path, methods in json.load(response)["paths"].items()
            for method in methods
        }

    # An id that exists for the operations on an event (no operation creates one), a call to
    # hang up, a call in progress to transfer (none is, with no worker answering calls), and a
    # number on the do-not-call list.
    config = (
        "[[operations]]\n"
        'include-name = "POST /webhook-events/{event_id}/redeliver"\n'
        f'parameters = {{ event_id = "{live_app.event_id}" }}\n'
        "[[operations]]\n"
        'include-name = "POST /calls/{call_id}/hangup"\n'
        f'parameters = {{ call_id = "{live_app.call_id}" }}\n'
        "[[operations]]\n"
        'include-name = "POST /calls/{call_id}/transfer"\n'
        f'parameters = {{ call_id = "{live_app.answered_call_id}" }}\n'
        "[[operations]]\n"
        'include-name = "DELETE /do-not-call/{number}"\n'
        f'parameters = {{ number = "{LISTED_NUMBER}" }}\n'
    )
    # A campaign's body and rows hold numbers, times and variables the fuzzer mostly gets
    # wrong, so these two see mostly 400s by design (each row is checked as initiate checks a
    # call); the 400s are still checked against the schema, only the warning is not shown.
    for operation in ("POST /campaigns", "POST /campaigns/{campaign_id}/recipients"):
        config += f'[[operations]]\ninclude-name = "{operation}"\nwarnings = false\n'
    for operation, campaign_id in live_app.campaign_ids.items():
        config += (
            "[[operations]]\n"
            f'include-name = "{operation}"\n'
            f'parameters = {{ campaign_id = "{campaign_id}" }}\n'
        )
    (tmp_path / "schemathesis.toml").write_text(config)
    run = subprocess.run(  # noqa: S603
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            schema_url,
            "--header",
            f"Authorization: Bearer {live_app.api_key}",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in report, report
    assert operations == OPERATIONS
    assert f"Tested: {len(OPERATIONS)}" in report, report
    seen = responses_seen(live_app.access_log)
    server_errors = [response for response in seen if response[2] >= 500]
    assert server_errors == [], live_app.server_log.read_text()[-3000:]
    # The fuzzer got past validation everywhere: each operation succeeded at least once.
    succeeded = {(method, path) for method, path, status in seen if 200 <= status < 300}
    assert operations <= succeeded, sorted(operations - succeeded)
    assert {status for _, path, status in seen if path == "/calls/initiate"} >= {200, 400, 403}
    assert [response for response in seen if response[2] == 429] == []
    assert money_mismatches(live_app.database_url) == []

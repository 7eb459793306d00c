"""What customer webhooks cost, measured against a baseline in the same run.

  outbox    a Twilio status webhook (ringing) with the outbox's INSERT, against the same
            webhook with the outbox switched off: time per webhook and queries per webhook
  delivery  events delivered per second by one Celery worker (threads pool) to a receiver on
            loopback that answers 204 at once, against the same receiver taking plain POSTs
            from one process as fast as it can (the HTTP floor)

It builds its own PostgreSQL database (burki_bench_webhooks) and uses Redis database 10 as the
worker's broker. Usage: .venv/bin/python bench/webhooks.py [--calls N] [--events N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATABASE = "burki_bench_webhooks"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
BROKER_URL = "redis://127.0.0.1:6379/10"

os.environ.update(
    DJANGO_SETTINGS_MODULE="burki.settings",
    DEBUG="false",
    SECRET_KEY="bench-webhooks-not-a-secret",
    FIELD_ENCRYPTION_KEYS="x6Wb0vJd4Ej7k8Dq2c2p4b8lYjv0h3q1l0kU7m2sQzE=",
    DATABASE_URL=DATABASE_URL,
    ALLOWED_HOSTS="testserver",
    PUBLIC_BASE_URL="https://burki.test",
    CELERY_BROKER_URL=BROKER_URL,
    WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
    API_THROTTLE_RATE="100000000/min",
    LOG_LEVEL="WARNING",
)


class Taker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{DATABASE}"')


def outbox(calls: int) -> None:
    from unittest import mock

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from twilio.request_validator import RequestValidator

    from calls import services
    from calls.models import Call
    from tests.conftest import make_tenant
    from tests.factories import PhoneNumberFactory

    tenant = make_tenant(balance_cents=10**9)
    number = PhoneNumberFactory(organization=tenant.organization, twilio=True)
    token = number.provider_account.secrets["auth_token"]
    now = timezone.now()
    rows = Call.objects.bulk_create(
        Call(
            organization=tenant.organization,
            phone_number=number,
            provider_account=number.provider_account,
            from_number=str(number.number),
            to_number="+15559876543",
            provider="twilio",
            call_sid=f"CA{i:032x}",
            status="initiated",
            time_limit_seconds=600,
            rate_cents_per_minute=10,
            hold_cents=100,
            initiated_at=now,
            live_until=now,
        )
        for i in range(calls)
    )
    client = Client()
    validator = RequestValidator(token)

    def ring(call: Call) -> None:
        path = f"/webhooks/calls/{call.pk}/status"
        params = {"CallSid": call.call_sid, "CallStatus": "ringing"}
        signature = validator.compute_signature("https://burki.test" + path, params)
        response = client.post(path, params, HTTP_X_TWILIO_SIGNATURE=signature)
        assert response.status_code == 200, response.content

    for call in rows[:20]:  # warm-up: connections, caches, code paths
        ring(call)
    with_outbox, without = [], []
    off = mock.patch.object(services, "call_event_record", lambda **_: None)
    queries = {}
    for round_start in range(20, calls, 40):  # interleaved rounds of 20 each
        for label, times, patch in (("on", with_outbox, None), ("off", without, off)):
            batch = rows[round_start + (0 if label == "on" else 20) :][:20]
            if patch:
                patch.start()
            try:
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    for call in batch:
                        ring(call)
                    times.append((time.perf_counter() - started, len(batch)))
                queries[label] = len(captured.captured_queries) / max(1, len(batch))
            finally:
                if patch:
                    patch.stop()
    on_ms = 1000 * sum(t for t, _ in with_outbox) / sum(n for _, n in with_outbox)
    off_ms = 1000 * sum(t for t, _ in without) / sum(n for _, n in without)
    print(
        f"outbox: status webhook {on_ms:.2f} ms with the outbox, {off_ms:.2f} ms without "
        f"(outbox/without={on_ms / off_ms:.2f}); queries {queries['on']:.0f} vs "
        f"{queries['off']:.0f} per webhook"
    )


def delivery(events: int, concurrency: int) -> None:
    import urllib3
    from django.utils import timezone

    from calls.models import Call
    from tests.conftest import make_tenant
    from webhooks.models import WebhookDelivery, WebhookEvent
    from webhooks.services import webhook_endpoint_create

    server = ThreadingHTTPServer(("127.0.0.1", 0), Taker)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"

    # The floor: plain POSTs of a like body, one process, a new connection each (as we send).
    body = b'{"type":"call.ended","timestamp":"2026-01-01T00:00:00Z","data":{}}' * 10
    floor_n = min(events, 2000)
    started = time.perf_counter()
    for _ in range(floor_n):
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.server_address[1], retries=False)
        pool.urlopen("POST", "/hooks", body=body).read()
        pool.close()
    floor = floor_n / (time.perf_counter() - started)

    tenant = make_tenant()
    webhook_endpoint_create(organization_id=tenant.organization.pk, url=url, events=[])
    call = Call.objects.first()
    assert call is not None
    snapshot = {"id": str(call.pk), "status": "completed", "from_number": call.from_number}
    # About six events a call, as a real call has (one call's events are sent one by one).
    subjects = list(Call.objects.values_list("pk", flat=True)[: max(1, events // 6)])
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            organization=tenant.organization,
            type="call.status_changed",
            subject_id=subjects[i % len(subjects)],
            sequence=1_000 + i,
            data={**snapshot, "sequence": i},
        )
        for i in range(events)
    )
    WebhookEvent.objects.update(created_at=timezone.now())
    worker = subprocess.Popen(  # noqa: S603
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "burki",
            "worker",
            "--beat",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--schedule",
            "/tmp/burki-bench-webhooks-beat",  # noqa: S108
        ],
        cwd=ROOT,
        env={**os.environ, "WEBHOOK_RELAY_INTERVAL_SECONDS": "0.2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        first = None
        while True:
            done = WebhookDelivery.objects.filter(state="delivered").count()
            if done and first is None:
                first = time.perf_counter()
            if done >= events:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {done} of {events} delivered in 10 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - (first or started)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    rate = events / elapsed
    print(
        f"delivery: {events} events in {elapsed:.1f} s by one worker ({concurrency} threads): "
        f"{rate:.0f} events/s; plain POSTs from one process {floor:.0f}/s "
        f"(delivery/plain={rate / floor:.2f})"
    )
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=420, help="status webhooks to time")
    parser.add_argument("--events", type=int, default=2000, help="events to deliver")
    parser.add_argument("--concurrency", type=int, default=8, help="the worker's threads")
    args = parser.parse_args()
    recreate_database()
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    outbox(args.calls)
    delivery(args.events, args.concurrency)
    from django.db import connections

    connections.close_all()


if __name__ == "__main__":
    main()

"""The deployment recipe, run: Debian's nginx with deploy/nginx/burki.conf (TLS on loopback, a
certificate made here) in front of gunicorn with deploy/gunicorn.conf.py, production settings, on
a database of its own seeded with the demo data (`<test database>_deploy`, dropped afterwards),
Redis for the rate limits and the fake Twilio for a provider.

`deploy/smoke` runs this file alone. It needs nginx (`apt-get install nginx`; .ci/run installs
it) and Redis on 127.0.0.1:6379. Twilio is a stand-in in this process, which can hold its
answers back.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
import redis
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twilio.request_validator import RequestValidator

from tests.test_fuzz import drop, free_port, fuzz_database_url, recreate, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "burki.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The rate limits' own Redis database: emptied before and after.
CACHE_URL = "redis://127.0.0.1:6379/11"
# Fewer threads than the slow-body attack has sockets: without nginx it would hold them all. One
# pooled PostgreSQL connection per process, fewer than its threads: a thread waiting on the
# provider must not hold one.
WORKERS, THREADS, POOL = 2, 4, 1
SLOW_CLIENTS = 4 * WORKERS * THREADS
INITIATE_RATE = 10  # a minute, per key
AUTH_TOKEN = secrets.token_hex(16)
TWILIO_NUMBER = "+15551230001"
TWILIO_ACCOUNT_SID = "AC" + "c" * 32

pytestmark = pytest.mark.django_db(transaction=True)


class TwilioStandIn(ThreadingHTTPServer):
    """Twilio's call-creating endpoint, on loopback. With `hold_until` set, it answers nobody
    before that many requests are waiting at once (or 10 s have passed), and it keeps the
    largest number it saw waiting together."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), TwilioHandler)
        self.lock = threading.Condition()
        self.waiting = 0
        self.most_waiting = 0
        self.hold_until = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class TwilioHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: TwilioStandIn

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.lock:
            server.waiting += 1
            server.most_waiting = max(server.most_waiting, server.waiting)
            server.lock.notify_all()
            # Once that many have waited together, all of them go (not only the last to come:
            # the first to leave would leave the others one short, waiting out the 10 s).
            server.lock.wait_for(lambda: server.most_waiting >= server.hold_until, timeout=10)
            server.waiting -= 1
        body = json.dumps({"sid": "CA" + secrets.token_hex(16), "status": "queued"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Deployment:
    url: str  # the public origin: nginx, TLS
    http_url: str  # nginx's plain-HTTP server, which only redirects
    gunicorn_port: int
    tls: ssl.SSLContext
    demo: dict[str, Any]
    globex_api_key: str
    burst_api_key: str
    database_url: str
    twilio: TwilioStandIn

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls)
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            if key:
                sent["Authorization"] = f"Bearer {key}"
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            answer: Any = data
            if response.getheader("Content-Type", "").startswith("application/json"):
                answer = json.loads(data)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
        finally:
            connection.close()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def site_config(https_port: int, http_port: int, gunicorn_port: int, folder: Path) -> str:
    """deploy/nginx/burki.conf with this machine's addresses and files put in; every other
    line as shipped."""
    site = SITE.read_text()
    changes = [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{gunicorn_port};"),
        ("    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https_port} ssl http2;\n"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("/etc/ssl/burki/", f"{folder}/"),
        ("/srv/burki/staticfiles/", f"{folder}/static/"),
    ]
    for old, new in changes:
        assert site.count(old) >= 1, f"deploy/nginx/burki.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


def nginx_config(folder: Path, site: Path) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 2;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {site};
}}
"""


SETUP = """
import json
from burki.models import Organization
from burki.services import api_key_create
from telephony.models import PhoneNumber, ProviderAccount
acme = Organization.objects.get(name="Acme")
account = ProviderAccount.objects.create(
    organization=acme, provider="twilio", name="Smoke Twilio",
    settings={"account_sid": "%(sid)s"}, secrets={"auth_token": "%(token)s"},
    calls_per_second=1000,
)
assistant = PhoneNumber.objects.get(number="+15551234567").assistant
PhoneNumber.objects.create(
    organization=acme, number="%(number)s", provider="twilio", provider_account=account,
    assistant=assistant,
)
_, globex = api_key_create(organization=Organization.objects.get(name="Globex"), name="smoke")
_, burst = api_key_create(organization=acme, name="burst")
print(json.dumps({"globex_api_key": globex, "burst_api_key": burst}))
"""


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 (our own programs)
        command, env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("deploy")
    (folder / "static").mkdir()
    cert, _ = make_certificate(folder)
    database_url = fuzz_database_url().removesuffix("_fuzz") + "_deploy"
    recreate(database_url)
    cache = redis.Redis.from_url(CACHE_URL)
    cache.flushdb()
    taken: set[int] = set()
    while len(taken) < 3:
        taken.add(free_port())
    https_port, http_port, gunicorn_port = sorted(taken)
    twilio = TwilioStandIn()
    threading.Thread(target=twilio.serve_forever, daemon=True).start()
    public = f"https://127.0.0.1:{https_port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "burki.settings",
        "DEBUG": "false",
        "SECRET_KEY": "deploy-" + Fernet.generate_key().decode(),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": public,
        "ALLOWED_HOSTS": "127.0.0.1",
        "TRUST_X_FORWARDED_PROTO": "true",
        "CACHE_URL": CACHE_URL,
        "INITIATE_THROTTLE_RATE": f"{INITIATE_RATE}/min",
        "MAX_CONCURRENT_CALLS": "1000",
        "TWILIO_API_BASE_URL": twilio.url,
        "CELERY_BROKER_URL": "memory://",
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(WORKERS),
        "GUNICORN_THREADS": str(THREADS),
        "DATABASE_POOL_MAX_SIZE": str(POOL),
        "WEB_INITIATIONS_AT_ONCE": "1",  # as deploy/systemd/burki-web.service
        "GUNICORN_BIND": f"127.0.0.1:{gunicorn_port}",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    run([*manage, "migrate", "--verbosity", "0"], env)
    demo = json.loads(run([*manage, "seed_demo", "--json"], env))
    setup = SETUP % {"sid": TWILIO_ACCOUNT_SID, "token": AUTH_TOKEN, "number": TWILIO_NUMBER}
    made = run([*manage, "shell", "-c", setup], env).strip().splitlines()[-1]
    keys = json.loads(made)

    site = folder / "burki.conf"
    site.write_text(site_config(https_port, http_port, gunicorn_port, folder))
    main = folder / "nginx.conf"
    main.write_text(nginx_config(folder, site))
    checked = subprocess.run(  # noqa: S603
        [NGINX, "-t", "-p", str(folder), "-c", str(main), "-e", str(folder / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    processes: list[subprocess.Popen[bytes]] = []
    try:
        server_log = folder / "gunicorn.log"
        with server_log.open("wb") as output:
            gunicorn = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "burki.wsgi"],
                env=env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(gunicorn)
        wait_until_up(f"http://127.0.0.1:{gunicorn_port}", gunicorn, server_log)
        processes.append(
            subprocess.Popen(  # noqa: S603
                [NGINX, "-p", str(folder), "-c", str(main), "-e", str(folder / "error.log")]
            )
        )
        tls = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (folder / "error.log").read_text()
                time.sleep(0.1)
        yield Deployment(
            url=public,
            http_url=f"http://127.0.0.1:{http_port}",
            gunicorn_port=gunicorn_port,
            tls=tls,
            demo=demo,
            globex_api_key=keys["globex_api_key"],
            burst_api_key=keys["burst_api_key"],
            database_url=database_url,
            twilio=twilio,
        )
    finally:
        for process in reversed(processes):
            stop(process)
        twilio.shutdown()
        cache.flushdb()
        drop(database_url)


def initiate_body(**fields: Any) -> str:
    return json.dumps(
        {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543", **fields}
    )


def test_the_seed_examples_answer_through_nginx(deployment: Deployment) -> None:
    key = deployment.demo["api_key"]
    examples = [
        initiate_body(),
        initiate_body(
            welcome_message="Hello {{name}}, this is a reminder about your appointment "
            "tomorrow at {{time}}.",
            agenda="Remind {{name}} about their upcoming {{appointment_type}} appointment.",
            variables={"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
        ),
        initiate_body(
            assistant_id=deployment.demo["other_assistant_id"],
            welcome_message="Hi there! I'm calling about your recent inquiry.",
        ),
    ]

    answers = [deployment.request("POST", "/calls/initiate", body, key=key) for body in examples]

    for status, _, body in answers:
        assert status == 200, body
        assert set(body) == {"message", "call_sid", "call_id"}
        assert body["message"] == "Call initiated successfully"
        assert body["call_sid"].startswith("SB")
    status, _, call = deployment.request("GET", f"/calls/{answers[1][2]['call_id']}", key=key)
    assert status == 200
    assert call["welcome_message"] == (
        "Hello John Doe, this is a reminder about your appointment tomorrow at 10 AM."
    )
    # Links are built from what nginx passed on (Host, X-Forwarded-Proto): the public origin.
    status, _, page = deployment.request("GET", "/calls?page_size=1", key=key)
    assert status == 200
    assert page["next"].startswith(f"{deployment.url}/calls?")
    assert len(page["results"]) == 1
    status, headers, refused = deployment.request("POST", "/calls/initiate", examples[0])
    assert (status, refused) == (401, {"detail": "Authentication credentials were not provided."})
    assert headers["www-authenticate"] == 'Bearer realm="api"'
    with psycopg.connect(deployment.database_url.replace("postgres://", "postgresql://", 1)) as db:
        placed = db.execute(
            "SELECT count(*) FROM calls_call WHERE id = ANY(%s)",
            ([answer[2]["call_id"] for answer in answers],),
        ).fetchone()
    assert placed == (3,)


def test_a_webhook_signed_for_the_public_url_is_accepted_through_nginx(
    deployment: Deployment,
) -> None:
    """Twilio signs PUBLIC_BASE_URL + path: the path must reach Django as Twilio sent it."""
    status, _, placed = deployment.request(
        "POST",
        "/calls/initiate",
        initiate_body(from_phone_number=TWILIO_NUMBER),
        key=deployment.demo["api_key"],
    )
    assert status == 200, placed
    path = f"/webhooks/calls/{placed['call_id']}/status"
    form = {"CallSid": placed["call_sid"], "CallStatus": "ringing", "AccountSid": "x"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(deployment.url + path, form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    forged = deployment.request(
        "POST", path, urlencode(form), {**headers, "X-Twilio-Signature": "AAAA" + signature[4:]}
    )
    signed = deployment.request(
        "POST", path, urlencode(form), {**headers, "X-Twilio-Signature": signature}
    )

    assert forged[0] == 403
    assert (signed[0], signed[2]) == (200, {"detail": "Applied."})
    status, _, call = deployment.request(
        "GET", f"/calls/{placed['call_id']}", key=deployment.demo["api_key"]
    )
    assert call["status"] == "ringing"


def test_plain_http_is_sent_to_https(deployment: Deployment) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(deployment.http_url.rsplit(":")[-1]))
    connection.request("GET", "/calls?status=completed")
    response = connection.getresponse()

    assert response.status == 301
    assert response.getheader("Location") == "https://127.0.0.1/calls?status=completed"


def test_a_body_over_the_limit_is_refused_by_nginx_before_it_is_sent(
    deployment: Deployment,
) -> None:
    raw = socket.create_connection(("127.0.0.1", deployment.port), timeout=5)
    with deployment.tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(
            b"POST /calls/initiate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 262145\r\n\r\n"
        )
        answer = sock.recv(200)

    assert answer.startswith(b"HTTP/1.1 413 ")


def test_forty_initiations_at_once_on_a_ten_a_minute_key_place_exactly_ten(
    deployment: Deployment,
) -> None:
    """Across gunicorn's processes, through nginx: the counter is one Redis script."""
    barrier = threading.Barrier(40)
    body = initiate_body(from_phone_number=deployment.demo["foreign_phone_number"])

    def send(_: int) -> tuple[int, dict[str, str], Any]:
        barrier.wait()
        return deployment.request("POST", "/calls/initiate", body, key=deployment.globex_api_key)

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(send, range(40)))

    assert Counter(status for status, _, _ in answers) == {200: INITIATE_RATE, 429: 30}
    assert {headers["retry-after"] for status, headers, _ in answers if status == 429} <= {"60"}
    with psycopg.connect(deployment.database_url.replace("postgres://", "postgresql://", 1)) as db:
        (placed,) = db.execute(
            "SELECT count(*) FROM calls_call c JOIN burki_organization o "
            "ON o.id = c.organization_id WHERE o.name = 'Globex'"
        ).fetchone()
    assert placed == INITIATE_RATE


def slow_clients(address: tuple[str, int], tls: ssl.SSLContext | None) -> list[socket.socket]:
    """Requests whose body comes a byte at a time: the admin's login form, which any client may
    post (Django reads the body for its CSRF check)."""
    head = (
        b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    clients = []
    for _ in range(SLOW_CLIENTS):
        sock = socket.create_connection(address, timeout=5)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(head + b"u")
        clients.append(sock)
    return clients


def health_latencies(connect: Any, seconds: float, trickle: list[socket.socket]) -> list[float]:
    """/health over and over on one kept-alive connection, for `seconds`, while every slow
    client sends one more byte every 5 s. A probe unanswered in 2 s counts as 2 s."""
    latencies: list[float] = []
    connection = connect()
    started = last_byte = time.monotonic()
    while time.monotonic() - started < seconds:
        if time.monotonic() - last_byte >= 5:
            for sock in trickle:
                sock.sendall(b"s")
            last_byte = time.monotonic()
        sent = time.monotonic()
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            latencies.append(time.monotonic() - sent)
        except (OSError, http.client.HTTPException):
            latencies.append(2.0)
            connection.close()
            connection = connect()
        time.sleep(0.02)
    connection.close()
    return latencies


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_slow_bodies_through_nginx_leave_health_answering(deployment: Deployment) -> None:
    """More slow clients than gunicorn has threads, each still sending its body when /health
    has been timed for 12 s: through nginx they hold nginx connections only, and /health keeps
    its p99 under 50 ms.

    (Sent to gunicorn itself, the same clients held every thread of gunicorn 23's workers and
    /health went unanswered; gunicorn 27's workers accept every connection at once, so whether
    one worker is left free depends on which took them, and that is not asserted here.)"""
    through_nginx = slow_clients(("127.0.0.1", deployment.port), deployment.tls)
    try:
        with_nginx = health_latencies(
            lambda: http.client.HTTPSConnection(
                "127.0.0.1", deployment.port, context=deployment.tls, timeout=2
            ),
            12,
            through_nginx,
        )
        # The attack was on all along: every slow client is still connected, mid-body (nginx
        # waits for the rest of it; a closed connection would refuse this byte or read EOF).
        still_sending = 0
        for sock in through_nginx:
            sock.sendall(b"s")
            sock.setblocking(False)
            try:
                sock.recv(1)  # an answer, or the end of the connection: not still sending
            except ssl.SSLWantReadError:
                still_sending += 1  # nothing to read: nginx waits for the rest of the body
        assert still_sending == SLOW_CLIENTS
    finally:
        for sock in through_nginx:
            sock.close()

    assert len(with_nginx) > 100
    assert p99(with_nginx) < 0.050, sorted(with_nginx)[-10:]


def test_a_clients_own_forwarded_header_is_replaced_by_nginx(deployment: Deployment) -> None:
    """Django trusts X-Forwarded-Proto (TRUST_X_FORWARDED_PROTO) because nginx sets it on every
    request to the scheme it was reached by, whatever the client sent."""
    status, _, page = deployment.request(
        "GET",
        "/calls?page_size=1",
        headers={"X-Forwarded-Proto": "http"},
        key=deployment.demo["api_key"],
    )

    assert status == 200
    assert re.match(rf"^{re.escape(deployment.url)}/calls\?", page["next"])


def test_calls_waiting_on_the_provider_hold_no_database_connection(
    deployment: Deployment,
) -> None:
    """As many initiations at once as a process has threads, against one pooled connection and
    one initiation slot per process: each gives both back while Twilio answers, so all of them
    reach Twilio together (holding their connections, at most two could)."""
    deployment.twilio.most_waiting = 0
    deployment.twilio.hold_until = THREADS
    barrier = threading.Barrier(THREADS)
    body = initiate_body(from_phone_number=TWILIO_NUMBER)

    def send(_: int) -> tuple[int, dict[str, str], Any]:
        barrier.wait()
        return deployment.request("POST", "/calls/initiate", body, key=deployment.burst_api_key)

    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(send, range(THREADS)))
    finally:
        deployment.twilio.hold_until = 0

    assert [status for status, _, _ in answers] == [200] * THREADS
    assert deployment.twilio.most_waiting == THREADS
    with psycopg.connect(deployment.database_url.replace("postgres://", "postgresql://", 1)) as db:
        statuses = db.execute(
            "SELECT status FROM calls_call WHERE id = ANY(%s)",
            ([answer[2]["call_id"] for answer in answers],),
        ).fetchall()
    assert statuses == [("initiated",)] * THREADS


def test_hang_ups_waiting_on_the_provider_hold_no_database_connection_either(
    deployment: Deployment,
) -> None:
    """A hang-up waits on the provider as an initiation does: it gives its pooled connection
    back meanwhile, so as many at once as a process has threads all reach Twilio together."""
    body = initiate_body(from_phone_number=TWILIO_NUMBER)
    placed = [
        deployment.request("POST", "/calls/initiate", body, key=deployment.burst_api_key)
        for _ in range(THREADS)
    ]
    assert [status for status, _, _ in placed] == [200] * THREADS
    deployment.twilio.most_waiting = 0
    deployment.twilio.hold_until = THREADS
    barrier = threading.Barrier(THREADS)

    def hang_up(call_id: str) -> tuple[int, dict[str, str], Any]:
        barrier.wait()
        return deployment.request("POST", f"/calls/{call_id}/hangup", key=deployment.burst_api_key)

    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            answers = list(pool.map(hang_up, [answer["call_id"] for _, _, answer in placed]))
    finally:
        deployment.twilio.hold_until = 0

    assert [status for status, _, _ in answers] == [200] * THREADS
    assert deployment.twilio.most_waiting == THREADS


def test_each_worker_freezes_what_lives_as_long_as_it_does() -> None:
    """A full collection walks every object not frozen, stopping every thread of the worker:
    the configuration's hooks freeze the loaded application at start and once more after the
    first requests (what loads on first use)."""
    import gc
    import runpy

    config = runpy.run_path("deploy/gunicorn.conf.py")
    assert config["GC_FREEZE"] is True
    try:
        config["post_worker_init"](None)
        at_start = gc.get_freeze_count()
        loaded_on_first_use = [[n] for n in range(20_000)]  # a provider's SDK, say

        for _ in range(config["WARM_REQUESTS"]):
            config["post_request"](None, None, {}, None)
        after_warming = gc.get_freeze_count()
    finally:
        gc.unfreeze()

    assert at_start > 10_000  # Django, the project's views, their modules
    assert after_warming >= at_start + len(loaded_on_first_use)

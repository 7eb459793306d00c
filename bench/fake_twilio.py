"""A stand-in for Twilio's REST API on loopback, for the real Twilio SDK (TWILIO_API_BASE_URL).

Two modes.

Instant (the default): it accepts every call at once and answers the call resource
(GET .../Calls/{sid}.json) as Twilio would once the call is over: completed, after `--talk`
seconds. No webhooks. bench/run's initiate/twilio scenario measures our cost against it, the
SDK's included, and the suite's worker test settles a call on its record.

Chaos (`--chaos`; bench/chaos.py drives it): Twilio as an unlucky operator meets it. Each call
created is placed and plays a lifecycle on the wall clock (initiated, ringing, then answered and
talking a random time within the call's TimeLimit, or busy, no answer at the ring Timeout, or
failed), and its truth is kept behind the REST API: create, fetch, list (To, From, Status,
paging), and update (Status=completed hangs a call up whatever its state; Status=canceled only
one that has not been answered, as Twilio documents). When a call is answered, its answer URL is
asked for TwiML, signed; TwiML that does not hand the call to a media stream ends it at once.
Status callbacks go to the StatusCallback URL the create carried, for the events it asked for,
signed with the account's auth token as Twilio signs them (X-Twilio-Signature: HMAC-SHA1 over the
URL and the sorted form parameters), from a pool of HTTP clients; `--drop` of them are lost,
`--duplicate` sent twice, and each is delayed (some by up to `--max-delay` seconds, which
reorders them). `--late` of the creates answer only `--late-by` seconds after they arrive, past
the caller's time-out, the call being placed anyway; half of those (Twilio being slow all
through) send no callback before then either. `--api-errors` of the reads (fetch, list)
answer 503. `--record-lag` lets the record show a call's end up to that long after its status
callback went out. Requests must carry the account's credentials (`--account-sid`,
`--auth-token`).

GET /_chaos/report (not Twilio's) returns what happened: every call's truth with our call id
(from its StatusCallback URL) and how many creates named that id, the callbacks' fate, the
answers, the hang-ups, and whether anything is still to come.

With `--delay`, every answer waits that long first, as a real provider's API takes hundreds of
milliseconds: the benchmark's initiate/twilio200 scenario runs against `--delay 0.2`.

Keep-alive (HTTP/1.1) like the real API, so the SDK's pooled session is exercised as in
production.

Usage: python bench/fake_twilio.py PORT [--talk SECONDS] [--delay SECONDS]
       python bench/fake_twilio.py PORT --chaos --account-sid AC... --auth-token TOKEN [--seed N]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import hmac
import itertools
import json
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")
CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls/(CA[0-9a-f]{32})\.json$")
# Our call id, in the webhook URLs we give Twilio.
OUR_CALL_ID = re.compile(r"/webhooks/calls/([0-9a-f-]{36})/")
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Which StatusCallbackEvent asks for which CallStatus ("completed" stands for every end).
EVENT_OF_STATUS = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
SIP_CODES = {"completed": "200", "busy": "486", "no-answer": "487", "failed": "404"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK would add 40 ms to every answer.
    disable_nagle_algorithm = True

    talk_seconds = 60
    delay_seconds = 0.0
    calls: dict[str, dict[str, object]] = {}
    lock = threading.Lock()
    chaos: ChaosTwilio | None = None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.chaos is not None:
            self.answer(*self.chaos.post(self.path, self.headers.get("Authorization", ""), body))
            return
        match = CALLS_PATH.match(self.path)
        if match is None:
            self.not_found()
            return
        sid = "CA" + secrets.token_hex(16)
        call = {"sid": sid, "account_sid": match.group(1), "direction": "outbound-api"}
        with self.lock:
            self.calls[sid] = {**call, "status": "completed", "duration": str(self.talk_seconds)}
        self.reply(201, {**call, "status": "queued"})

    def do_GET(self) -> None:
        if self.chaos is not None:
            self.answer(*self.chaos.get(self.path, self.headers.get("Authorization", "")))
            return
        match = CALL_PATH.match(self.path)
        with self.lock:
            record = self.calls.get(match.group(2)) if match else None
        if record is None:
            self.not_found()
            return
        self.reply(200, record)

    def answer(self, status: int, body: dict[str, Any], wait: float = 0.0) -> None:
        if wait:
            time.sleep(wait)  # placed already; the caller has stopped waiting by now
        try:
            self.reply(status, body)
        except OSError:
            self.close_connection = True  # the caller hung up on a late answer

    def not_found(self) -> None:
        self.reply(404, {"code": 20404, "message": "Not found", "status": 404})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than the answer


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: HMAC-SHA1 with the auth token over the URL followed by every POST
    parameter's name and value, sorted by name; base64."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def rfc2822(at: float | None) -> str | None:
    return None if at is None else formatdate(int(at), usegmt=True).replace("GMT", "+0000")


def error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "more_info": "", "status": status}


@dataclass
class FakeCall:
    sid: str
    call_id: str  # ours, from the StatusCallback URL ("" if it carried none)
    to: str
    from_: str
    answer_url: str
    status_url: str
    events: frozenset[str]
    time_limit: int
    ring_timeout: int
    created: float
    late: bool
    callbacks_not_before: float  # a slow Twilio's callbacks are as late as its answer
    plan: str  # how it will end on its own
    status: str = "queued"
    answered: float | None = None
    ended: float | None = None
    duration: int | None = None
    # Until then the record still shows the state before the end (--record-lag).
    record_final_at: float = 0.0
    status_before_end: str = "queued"
    sequence: itertools.count = field(default_factory=itertools.count)
    ended_by: str = ""  # "itself", "hang-up", "answer" (TwiML that did not stream)
    hang_ups: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""  # what its answer URL gave: stream, hangup, error:<why>

    def resource(self, now: float) -> dict[str, Any]:
        status, duration, ended = self.status, self.duration, self.ended
        if status in FINAL and now < self.record_final_at:
            status, duration, ended = self.status_before_end, None, None
        return {
            "sid": self.sid,
            "account_sid": "",  # filled by the caller
            "to": self.to,
            "from": self.from_,
            "status": status,
            "direction": "outbound-api",
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(now),
            "start_time": rfc2822(self.answered),
            "end_time": rfc2822(ended),
            "duration": None if duration is None else str(duration),
            "api_version": "2010-04-01",
            "uri": f"/Calls/{self.sid}.json",
        }


class ChaosTwilio:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)  # noqa: S311 (chance, not secrets)
        self.lock = threading.RLock()
        self.calls: dict[str, FakeCall] = {}
        self.creates: Counter[str] = Counter()  # by our call id
        self.stats: Counter[str] = Counter()
        self.callback_answers: Counter[str] = Counter()
        self.highest_sequence: dict[str, int] = {}
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_ids = itertools.count()
        self.timers_changed = threading.Condition(self.lock)
        self.in_flight = 0  # callbacks and answer requests scheduled or being sent
        self.senders = ThreadPoolExecutor(max_workers=args.senders, thread_name_prefix="callback")
        self.local = threading.local()
        threading.Thread(target=self.run_timers, name="clock", daemon=True).start()

    # The clock: every lifecycle step and every delivery at its time.

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self.lock:
            heapq.heappush(self.timers, (when, next(self.timer_ids), action))
            self.timers_changed.notify()

    def run_timers(self) -> None:
        while True:
            with self.lock:
                while not self.timers or self.timers[0][0] > time.time():
                    timeout = self.timers[0][0] - time.time() if self.timers else None
                    self.timers_changed.wait(timeout)
                _, _, action = heapq.heappop(self.timers)
            try:
                action()
            except Exception as exc:  # one bad step must not stop the clock
                print(f"fake twilio: {type(exc).__name__}: {exc}", flush=True)

    def random(self) -> float:
        with self.lock:
            return self.rng.random()

    def uniform(self, low: float, high: float) -> float:
        with self.lock:
            return self.rng.uniform(low, high)

    # The REST API.

    def authorized(self, authorization: str, account: str) -> bool:
        expected = f"{self.args.account_sid}:{self.args.auth_token}".encode()
        given = authorization.removeprefix("Basic ").encode()
        try:
            given = base64.b64decode(given, validate=True)
        except ValueError:
            return False
        return account == self.args.account_sid and hmac.compare_digest(given, expected)

    def post(
        self, path: str, authorization: str, body: bytes
    ) -> tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], float]:
        form = {k: v for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if match := CALLS_PATH.match(path):
            if not self.authorized(authorization, match.group(1)):
                return error(401, 20003, "Authenticate")
            return self.create(form)
        if match := CALL_PATH.match(path):
            if not self.authorized(authorization, match.group(1)):
                return error(401, 20003, "Authenticate")
            return self.update(match.group(2), form)
        return error(404, 20404, "Not found")

    def get(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        url = urlsplit(path)
        if url.path == "/_chaos/report":
            return 200, self.report()
        calls, call = CALLS_PATH.match(url.path), CALL_PATH.match(url.path)
        if not (calls or call):
            return error(404, 20404, "Not found")
        if not self.authorized(authorization, (calls or call).group(1)):  # type: ignore[union-attr]
            return error(401, 20003, "Authenticate")
        if self.random() < self.args.api_errors:
            with self.lock:
                self.stats["reads answered 503"] += 1
            return error(503, 20503, "Service Unavailable")
        now = time.time()
        with self.lock:
            if call:
                self.stats["fetches"] += 1
                found = self.calls.get(call.group(2))
                if found is None:
                    return error(404, 20404, "The requested resource was not found")
                return 200, self.resource(found, now)
            self.stats["lists"] += 1
            return 200, self.page(parse_qs(url.query), now)

    def resource(self, call: FakeCall, now: float) -> dict[str, Any]:
        return {**call.resource(now), "account_sid": self.args.account_sid}

    def page(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        def wanted(call: FakeCall) -> bool:
            record = call.resource(now)
            return all(
                query[name][0] == record[key]
                for name, key in (("To", "to"), ("From", "from"), ("Status", "status"))
                if name in query
            )

        found = sorted(
            (c for c in self.calls.values() if wanted(c)), key=lambda c: c.created, reverse=True
        )
        size = int(query.get("PageSize", ["50"])[0])
        number = int(query.get("Page", ["0"])[0])
        chunk = found[number * size : (number + 1) * size]
        base = f"/2010-04-01/Accounts/{self.args.account_sid}/Calls.json"
        more = (number + 1) * size < len(found)
        return {
            "calls": [self.resource(c, now) for c in chunk],
            "page": number,
            "page_size": size,
            "start": number * size,
            "end": number * size + max(0, len(chunk) - 1),
            "first_page_uri": f"{base}?PageSize={size}&Page=0",
            "next_page_uri": f"{base}?PageSize={size}&Page={number + 1}" if more else None,
            "previous_page_uri": None,
            "uri": f"{base}?PageSize={size}&Page={number}",
        }

    def create(
        self, form: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], float]:
        one = {name: values[0] for name, values in form.items()}
        if not one.get("To") or not one.get("From") or not one.get("Url"):
            return error(400, 21201, "No 'To', 'From' or 'Url' number is specified")
        status_url = one.get("StatusCallback", "")
        ours = OUR_CALL_ID.search(status_url)
        now = time.time()
        with self.lock:
            plan = self.rng.choices(["completed", "busy", "no-answer", "failed"], [75, 10, 10, 5])[
                0
            ]
            late = self.rng.random() < self.args.late
            held = late and self.rng.random() < 0.5
            call = FakeCall(
                sid="CA" + f"{self.rng.getrandbits(128):032x}",
                call_id=ours.group(1) if ours else "",
                to=one["To"],
                from_=one["From"],
                answer_url=one["Url"],
                status_url=status_url,
                events=frozenset(form.get("StatusCallbackEvent", ["completed"])),
                time_limit=int(one.get("TimeLimit") or 14400),
                ring_timeout=int(one.get("Timeout") or 60),
                created=now,
                late=late,
                callbacks_not_before=now + self.args.late_by + 0.1 if held else 0.0,
                plan=plan,
            )
            self.calls[call.sid] = call
            self.creates[call.call_id] += 1
            self.stats["creates"] += 1
            self.stats["creates answered late"] += late
            self.plan(call, now)
            created = self.resource(call, now)
        if late:
            return 201, created, self.args.late_by
        return 201, created

    def update(self, sid: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        wanted = form.get("Status", [""])[0]
        now = time.time()
        with self.lock:
            call = self.calls.get(sid)
            if call is None:
                return error(404, 20404, "The requested resource was not found")
            before = call.status
            effect = "none"
            # Twilio: "canceled" hangs up a call that is queued or ringing and does not affect
            # one in progress; "completed" hangs up any.
            if before not in FINAL and (
                wanted == "completed" or (wanted == "canceled" and before != "in-progress")
            ):
                self.end(call, "completed" if before == "in-progress" else "canceled", now)
                call.ended_by = "hang-up"
                effect = "ended"
            call.hang_ups.append({"status": wanted, "state": before, "effect": effect})
            self.stats["updates"] += 1
            return 200, self.resource(call, now)

    # A call's lifecycle.

    def plan(self, call: FakeCall, now: float) -> None:
        """Schedule how the call goes if nobody hangs it up (under the lock)."""
        rng = self.rng
        self.at(now + rng.uniform(0.02, 0.2), lambda: self.step(call, "initiated"))
        if call.plan == "failed":
            self.at(now + rng.uniform(0.3, 1.5), lambda: self.finish(call, "failed"))
            return
        ringing = now + rng.uniform(0.3, 1.5)
        self.at(ringing, lambda: self.step(call, "ringing"))
        if call.plan == "busy":
            self.at(ringing + rng.uniform(0.5, 3), lambda: self.finish(call, "busy"))
        elif call.plan == "no-answer":
            self.at(ringing + call.ring_timeout, lambda: self.finish(call, "no-answer"))
        else:
            answered = ringing + rng.uniform(0.5, min(6.0, call.ring_timeout - 0.5))
            # Some run to the very limit, where the provider ends them.
            talk = call.time_limit if rng.random() < 0.1 else rng.randint(1, call.time_limit)
            self.at(answered, lambda: self.answer(call, talk))

    def step(self, call: FakeCall, status: str) -> None:
        with self.lock:
            if call.status in FINAL:
                return
            call.status = status
            self.callback(call, status, time.time())

    def answer(self, call: FakeCall, talk: int) -> None:
        with self.lock:
            if call.status in FINAL:
                return
            now = time.time()
            call.status, call.answered = "in-progress", now
            self.in_flight += 1
            self.callback(call, "in-progress", now)
            self.at(now + talk, lambda: self.finish(call, "completed", talk))
        self.senders.submit(self.ask_for_twiml, call)

    def finish(self, call: FakeCall, status: str, talk: int | None = None) -> None:
        with self.lock:
            if call.status in FINAL:
                return
            self.end(call, status, time.time(), talk)
            call.ended_by = call.ended_by or "itself"

    def end(self, call: FakeCall, status: str, now: float, talk: int | None = None) -> None:
        """The call is over (under the lock): its record, then its last status callback."""
        call.status_before_end = call.status
        call.status, call.ended = status, now
        if status == "completed" and call.answered is not None:
            call.duration = talk if talk is not None else int(now - call.answered)
        else:
            call.duration = 0
        call.record_final_at = now + self.rng.uniform(0, self.args.record_lag)
        extra = {"CallDuration": str(call.duration), "Duration": str(-(-call.duration // 60))}
        if status in SIP_CODES:
            extra["SipResponseCode"] = SIP_CODES[status]
        self.callback(call, status, now, extra)

    def ask_for_twiml(self, call: FakeCall) -> None:
        """Twilio's request to the answer URL: the call goes where its TwiML says."""
        params = self.params(call, "in-progress", time.time())
        params.pop("SequenceNumber")
        params.pop("CallbackSource")
        params.pop("Timestamp")
        try:
            response = self.session().post(
                call.answer_url,
                data=params,
                headers={"X-Twilio-Signature": self.sign(call.answer_url, params)},
                timeout=15,
            )
            outcome = self.twiml_outcome(call, response.status_code, response.text)
        except Exception as exc:
            outcome = f"error:{type(exc).__name__}"
        with self.lock:
            self.in_flight -= 1
            call.answer = outcome
            self.stats[f"answers: {outcome}"] += 1
            if outcome != "stream" and call.status not in FINAL:
                # Twilio plays an error or obeys <Hangup/>: the call ends there.
                self.end(call, "completed", time.time())
                call.ended_by = "answer"

    @staticmethod
    def twiml_outcome(call: FakeCall, status: int, text: str) -> str:
        if status != 200:
            return f"error:HTTP {status}"
        try:
            root = ElementTree.fromstring(text)  # noqa: S314 (our own service, on loopback)
        except ElementTree.ParseError:
            return "error:not XML"
        stream = root.find("./Connect/Stream")
        if stream is not None:
            parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
            ok = stream.get("url") and parameters.get("call_id") == call.call_id
            return "stream" if ok else "error:a stream for another call"
        if root.find("Hangup") is not None:
            return "hangup"
        return "error:no stream"

    # Status callbacks.

    def params(self, call: FakeCall, status: str, now: float) -> dict[str, str]:
        return {
            "AccountSid": self.args.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": status,
            "CallbackSource": "call-progress-events",
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
            "SequenceNumber": str(next(call.sequence)),
            "Timestamp": rfc2822(now) or "",
        }

    def callback(
        self, call: FakeCall, status: str, now: float, extra: dict[str, str] | None = None
    ) -> None:
        """The status callback for `status`, if the create asked for it: lost, sent once or
        twice, each copy after its own delay (under the lock)."""
        event = "completed" if status in FINAL else EVENT_OF_STATUS[status]
        if not call.status_url or event not in call.events:
            return
        params = {**self.params(call, status, now), **(extra or {})}
        self.stats["callbacks"] += 1
        if self.rng.random() < self.args.drop:
            self.stats["callbacks lost"] += 1
            return
        copies = 2 if self.rng.random() < self.args.duplicate else 1
        self.stats["callbacks sent twice"] += copies - 1
        for _ in range(copies):
            if self.rng.random() < 0.3:
                delay = self.rng.uniform(0.5, self.args.max_delay)
                self.stats["deliveries delayed"] += 1
            else:
                delay = self.rng.uniform(0, 0.2)
            self.in_flight += 1
            due = max(now + delay, call.callbacks_not_before + delay)
            self.at(due, lambda: self.senders.submit(self.deliver, call, params))

    def deliver(self, call: FakeCall, params: dict[str, str]) -> None:
        sequence = int(params["SequenceNumber"])
        with self.lock:
            highest = self.highest_sequence.get(call.sid, -1)
            self.stats["deliveries"] += 1
            self.stats["deliveries out of order"] += sequence < highest
            self.highest_sequence[call.sid] = max(highest, sequence)
        try:
            response = self.session().post(
                call.status_url,
                data=params,
                headers={"X-Twilio-Signature": self.sign(call.status_url, params)},
                timeout=15,
            )
            answer = f"HTTP {response.status_code}"
        except Exception as exc:
            answer = type(exc).__name__  # Twilio does not retry a status callback
        with self.lock:
            self.in_flight -= 1
            self.callback_answers[answer] += 1

    def sign(self, url: str, params: dict[str, str]) -> str:
        return twilio_signature(self.args.auth_token, url, params)

    def session(self) -> Any:
        import requests  # only the chaos mode sends anything

        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["User-Agent"] = "TwilioProxy/1.1"
        return self.local.session

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": [
                    {
                        "sid": c.sid,
                        "call_id": c.call_id,
                        "to": c.to,
                        "status": c.status,
                        "duration": c.duration,
                        "late": c.late,
                        "ended_by": c.ended_by,
                        "answer": c.answer,
                        "hang_ups": c.hang_ups,
                    }
                    for c in self.calls.values()
                ],
                "creates": dict(self.creates),
                "stats": dict(self.stats),
                "callback_answers": dict(self.callback_answers),
                "live": sum(c.status not in FINAL for c in self.calls.values()),
                "in_flight": self.in_flight,
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--talk", type=int, default=60, help="instant mode: every call's talk")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds every answer waits before it is sent"
    )
    parser.add_argument("--chaos", action="store_true", help="play lifecycles, send callbacks")
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="", help="signs callbacks, checks requests")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drop", type=float, default=0.30, help="share of callbacks lost")
    parser.add_argument("--duplicate", type=float, default=0.20, help="share sent twice")
    parser.add_argument("--max-delay", type=float, default=8.0, help="longest callback delay")
    parser.add_argument("--late", type=float, default=0.10, help="share of creates answered late")
    parser.add_argument("--late-by", type=float, default=2.5, help="seconds a late create takes")
    parser.add_argument("--api-errors", type=float, default=0.05, help="share of reads that 503")
    parser.add_argument("--record-lag", type=float, default=2.0, help="seconds the record lags")
    parser.add_argument("--senders", type=int, default=8, help="callback clients at once")
    args = parser.parse_args()
    Handler.talk_seconds = args.talk
    Handler.delay_seconds = args.delay
    if args.chaos:
        if not args.auth_token:
            parser.error("--chaos signs its callbacks: give --auth-token")
        Handler.chaos = ChaosTwilio(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

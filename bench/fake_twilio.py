"""A stand-in for Twilio's REST API on loopback that accepts every call at once.

The benchmark points the real Twilio SDK at it (TWILIO_API_BASE_URL), so the initiate/twilio
figure is our cost, the SDK's included, and not the network's. Keep-alive (HTTP/1.1) like the
real API, so the SDK's pooled session is exercised as in production.

It keeps each call it created, and answers the call resource (GET .../Calls/{sid}.json) as
Twilio would once the call is over: completed, after `--talk` seconds (the tests settle calls
on that record).

With `--delay`, every answer waits that long first, as a real provider's API takes hundreds of
milliseconds: the benchmark's initiate/twilio200 scenario runs against `--delay 0.2`.

Usage: python bench/fake_twilio.py PORT [--talk SECONDS] [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")
CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls/(CA[0-9a-f]{32})\.json$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK would add 40 ms to every answer.
    disable_nagle_algorithm = True

    talk_seconds = 60
    delay_seconds = 0.0
    calls: dict[str, dict[str, object]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
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
        match = CALL_PATH.match(self.path)
        with self.lock:
            record = self.calls.get(match.group(2)) if match else None
        if record is None:
            self.not_found()
            return
        self.reply(200, record)

    def not_found(self) -> None:
        self.reply(404, {"code": 20404, "message": "Not found", "status": 404})

    def reply(self, status: int, body: dict[str, object]) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--talk", type=int, default=60, help="how long every call talked")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds every answer waits before it is sent"
    )
    args = parser.parse_args()
    Handler.talk_seconds = args.talk
    Handler.delay_seconds = args.delay
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

"""A stand-in for Twilio's REST API on loopback that accepts every call at once.

The benchmark points the real Twilio SDK at it (TWILIO_API_BASE_URL), so the initiate/twilio
figure is our cost, the SDK's included, and not the network's. Keep-alive (HTTP/1.1) like the
real API, so the SDK's pooled session is exercised as in production.

Usage: python bench/fake_twilio.py PORT
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK would add 40 ms to every answer.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        match = CALLS_PATH.match(self.path)
        if match is None:
            self.reply(404, {"code": 20404, "message": "Not found", "status": 404})
            return
        self.reply(
            201,
            {
                "sid": "CA" + secrets.token_hex(16),
                "account_sid": match.group(1),
                "status": "queued",
                "direction": "outbound-api",
            },
        )

    def reply(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than the answer


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

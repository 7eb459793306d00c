"""A customer's webhook receiver on loopback: a real HTTP server that verifies nothing itself
but records every request, and can be told to fail, stall, hang up or go away."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    port: int
    # Decides each request's fate: a status code to answer, or "stall" / "hang up".
    behaviour: Callable[[Received], int | str] = lambda _: 200
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/burki"

    def taken(self) -> list[Received]:
        """The requests it answered 2xx, in the order they arrived."""
        with self.lock:
            return [r for r in self.requests if getattr(r, "answered", 0) in range(200, 300)]

    def verified(self, secret: str) -> list[Any]:
        """Every taken delivery verified with the standardwebhooks package; their payloads."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.taken()]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    path=self.path,
                )
                fate = receiver.behaviour(received)
                with receiver.lock:
                    receiver.requests.append(received)
                if fate == "stall":
                    time.sleep(3)
                    fate = 200
                if fate == "hang up":
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = b'{"ok": true}'
                try:
                    self.send_response(int(fate))
                    if int(fate) in (301, 302, 307):
                        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:
                    return  # the sender is gone: it never had this answer
                received.answered = int(fate)  # type: ignore[attr-defined]

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Gone: connections to it are refused until it starts again."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def receiver(port: int = 0, **kwargs: Any) -> Iterator[Receiver]:
    if port == 0:
        probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        port = probe.server_address[1]
        probe.server_close()
    r = Receiver(port=port, **kwargs)
    r.start()
    try:
        yield r
    finally:
        r.stop()

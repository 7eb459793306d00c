"""The SIP agent's control channel: one JSON line in, one JSON line out, over TCP on loopback.

Every request carries the shared secret (SIP_AGENT_SECRET, or one derived from SECRET_KEY), so
nothing else on the machine can dial. The client half is what the `sip` provider uses; it never
loads the SIP stack. `ask` and `TypedControlServer` speak the typed messages of
telephony.sip.protocol; `request` and `ControlServer` are the raw JSON underneath.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings

from telephony.sip import protocol

MAX_LINE = 64 * 1024


class AgentUnreachable(Exception):
    """Nobody accepted the connection: no agent listens there (or it is not ours)."""


class AgentTimedOut(Exception):
    """The agent took the request but did not answer in time; the call may have been dialled."""


def control_secret() -> str:
    configured: str = settings.SIP_AGENT_SECRET
    if configured:
        return configured
    return hmac.new(settings.SECRET_KEY.encode(), b"burki-sip-agent", hashlib.sha256).hexdigest()


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"A SIP agent address is host:port, not {address!r}.")
    return host.strip("[]"), int(port)


def request(address: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send one request to the agent at `address` and return its answer."""
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout, 2.0))
    except OSError as exc:
        raise AgentUnreachable(str(exc)) from exc
    with sock:
        sock.settimeout(timeout)
        try:
            message = {**payload, "secret": control_secret()}
            sock.sendall(json.dumps(message).encode() + b"\n")
            reader = sock.makefile("rb")
            line = reader.readline(MAX_LINE)
        except TimeoutError as exc:
            raise AgentTimedOut("no answer") from exc
        except OSError as exc:
            raise AgentUnreachable(str(exc)) from exc
    if not line:
        raise AgentUnreachable("the connection closed without an answer")
    try:
        answer: dict[str, Any] = json.loads(line)
    except ValueError as exc:
        raise AgentUnreachable("the answer was not JSON") from exc
    return answer


def ask(address: str, message: protocol.Request, *, timeout: float) -> protocol.Reply:
    """Send one typed request to the agent at `address`; its typed answer."""
    answer = request(address, protocol.encode_request(message), timeout=timeout)
    return protocol.decode_reply(message, answer)


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class _RequestHandler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        self.connection.settimeout(10)
        try:
            line = self.rfile.readline(MAX_LINE)
            payload = json.loads(line)
            if not isinstance(payload, dict):
                raise ValueError
        except (OSError, ValueError):
            failure = protocol.Failure(protocol.ErrorCode.BAD_REQUEST, "Send one JSON object.")
            self._reply(protocol.encode_reply(failure))
            return
        secret = str(payload.pop("secret", ""))
        if not hmac.compare_digest(secret.encode(), self.server.secret.encode()):
            failure = protocol.Failure(protocol.ErrorCode.UNAUTHORIZED, "Wrong secret.")
            self._reply(protocol.encode_reply(failure))
            return
        self._reply(self.server.handler(payload))

    def _reply(self, answer: dict[str, Any]) -> None:
        # The caller may have given up (its time-out); the handler's outcome stands anyway.
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")


class ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, handler: Handler, secret: str) -> None:
        self.handler = handler
        self.secret = secret
        super().__init__(parse_address(address), _RequestHandler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="sip-control", daemon=True)
        thread.start()
        return thread


TypedHandler = Callable[[protocol.Request], protocol.Reply]


class TypedControlServer(ControlServer):
    """A control server whose handler takes and returns telephony.sip.protocol messages."""

    def __init__(self, address: str, handler: TypedHandler, secret: str) -> None:
        def handle(body: dict[str, Any]) -> dict[str, Any]:
            try:
                message = protocol.decode_request(body)
            except protocol.ProtocolError as exc:
                return protocol.encode_reply(
                    protocol.Failure(protocol.ErrorCode.BAD_REQUEST, str(exc))
                )
            return protocol.encode_reply(handler(message))

        super().__init__(address, handle, secret)

"""Several SIP engines behind one control address (`sip_agent --processes N`).

The PyPI pjsua2 wheel carries CALLS_PER_ENGINE calls per process, so an agent scales by
processes. The supervisor forks the engines (each a whole agent of its own: PJSIP, control
server on an ephemeral loopback port, reporter, bridge) before it loads anything, answers the
web side on the agent's one control address, and forwards: a dial to the least loaded engine
(the next one when that is full, "full" only when every engine is), a hang-up or a find to all.
An engine that dies is started again; its calls are settled by the sweep, as for any agent
that stops without a word (their heartbeats stop).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from django.conf import settings
from django.db import connections

from telephony.sip import control, protocol
from telephony.sip.protocol import CALLS_PER_ENGINE, ErrorCode, Failure

logger = logging.getLogger("telephony.sip.supervisor")

RTP_PORTS_PER_ENGINE = CALLS_PER_ENGINE * 2 * 4  # what one engine's media transports may take
CHECK_SECONDS = 0.2
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
PR_SET_PDEATHSIG = 1

# Runs one engine until SIGTERM: (index, SIP port offset, RTP port, tell the supervisor its
# control address).
EngineMain = Callable[[int, int, int, Callable[[str], None]], None]


@dataclass
class _Engine:
    index: int
    process: BaseProcess | None = None
    address: str = ""
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        *,
        processes: int,
        control_address: str,
        rtp_port: int,
        engine_main: EngineMain,
        ready: Callable[[str], None],
    ) -> None:
        self.control_address = control_address
        self.rtp_port = rtp_port
        self.engine_main = engine_main
        self.ready = ready
        self.engines = [_Engine(index=i) for i in range(processes)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("fork")
        # Longer than the web side waits: a dial it gave up on is reported as "may have been
        # placed" there, never answered "unreachable" here (which would dial elsewhere).
        self._forward_timeout = settings.SIP_AGENT_TIMEOUT_SECONDS + 5.0
        self._server: control.TypedControlServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        for engine in self.engines:
            self._start(engine)
        server = self._server = control.TypedControlServer(
            self.control_address, self.handle, control.control_secret()
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        server.start()
        self.ready(
            f"sip agent ready: control {self.control_address}, {len(self.engines)} engines "
            f"({len(self.engines) * CALLS_PER_ENGINE} calls at most)"
        )
        try:
            while not self._stop.wait(CHECK_SECONDS):
                for engine in self.engines:
                    if engine.process is not None and not engine.process.is_alive():
                        logger.error(
                            "sip engine %s died (exit code %s); starting it again",
                            engine.index,
                            engine.process.exitcode,
                        )
                        engine.restarts += 1
                        self._start(engine)
        finally:
            server.shutdown()
            server.server_close()
            self._stop_engines()

    def _start(self, engine: _Engine) -> None:
        # A fork keeps only this thread: no database connection may cross it, and the SIP stack
        # is loaded in the child alone.
        connections.close_all()
        receiver, sender = self._context.Pipe(duplex=False)
        offset = engine.index
        rtp = self.rtp_port + engine.index * RTP_PORTS_PER_ENGINE
        process = self._context.Process(
            target=_engine_process,
            args=(self.engine_main, engine.index, offset, rtp, sender, self._server),
            name=f"sip-engine-{engine.index}",
            daemon=False,
        )
        process.start()
        sender.close()
        address = ""
        if receiver.poll(START_TIMEOUT_SECONDS):
            with contextlib.suppress(EOFError):
                address = str(receiver.recv())
        receiver.close()
        with self._lock:
            engine.process = process
            engine.address = address
        if not address:
            logger.error("sip engine %s did not start", engine.index)

    def _stop_engines(self) -> None:
        for engine in self.engines:
            if engine.process is not None and engine.process.is_alive():
                os.kill(engine.process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for engine in self.engines:
            if engine.process is not None:
                engine.process.join(max(0.1, deadline - time.monotonic()))
                if engine.process.is_alive():
                    engine.process.kill()
                    engine.process.join(5)

    # ---- control requests (the control server's threads) -------------------------------

    def handle(self, message: protocol.Request) -> protocol.Reply:
        if isinstance(message, protocol.Dial):
            return self._dial(message)
        replies = self._ask_all(message)
        if isinstance(message, protocol.HangUp | protocol.Transfer):
            done = [r for r in replies if isinstance(r, protocol.Done)]
            if done:
                return done[0]
            refused = [
                r for r in replies if isinstance(r, Failure) and r.code is not ErrorCode.NOT_CARRIED
            ]
            if refused:
                return refused[0]
            return Failure(ErrorCode.NOT_CARRIED, "This SIP agent is not carrying the call.")
        if isinstance(message, protocol.Find):
            calls = tuple(c for r in replies if isinstance(r, protocol.Found) for c in r.calls)
            return protocol.Found(calls)
        if isinstance(message, protocol.Status):
            loads = [r for r in replies if isinstance(r, protocol.Load)]
            return protocol.Load(
                calls=sum(load.calls for load in loads),
                capacity=sum(load.capacity for load in loads),
            )
        return Failure(ErrorCode.BAD_REQUEST, "This SIP agent cannot do that.")

    def _dial(self, message: protocol.Dial) -> protocol.Reply:
        loads: list[tuple[int, str]] = []
        for address, reply in self._ask_each(protocol.Status()):
            if isinstance(reply, protocol.Load) and reply.calls < reply.capacity:
                loads.append((reply.calls, address))
        for _, address in sorted(loads):
            try:
                reply = control.ask(address, message, timeout=self._forward_timeout)
            except (control.AgentUnreachable, protocol.ProtocolError) as exc:
                logger.warning("sip engine at %s unreachable: %s", address, exc)
                continue
            except control.AgentTimedOut:
                # It may have dialled: never try another engine with the same call.
                return Failure(ErrorCode.INTERNAL, "A SIP engine did not answer in time.")
            if isinstance(reply, Failure) and reply.code is ErrorCode.FULL:
                continue
            return reply
        return Failure(
            ErrorCode.FULL, f"Every engine of this SIP agent is carrying {CALLS_PER_ENGINE} calls."
        )

    def _ask_all(self, message: protocol.Request) -> list[protocol.Reply]:
        return [reply for _, reply in self._ask_each(message)]

    def _ask_each(self, message: protocol.Request) -> list[tuple[str, protocol.Reply]]:
        with self._lock:
            addresses = [e.address for e in self.engines if e.address]
        replies = []
        for address in addresses:
            try:
                replies.append((address, control.ask(address, message, timeout=5.0)))
            except (control.AgentUnreachable, control.AgentTimedOut, protocol.ProtocolError):
                logger.warning("sip engine at %s could not be asked", address)
        return replies


def _engine_process(
    engine_main: EngineMain,
    index: int,
    sip_port_offset: int,
    rtp_port: int,
    sender: multiprocessing.connection.Connection,
    inherited: control.TypedControlServer | None,
) -> None:
    if inherited is not None:
        inherited.socket.close()  # the supervisor's control address is not ours to hold
    # Die with the supervisor, even when it is killed without a word.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor; it stops us

    def listening(address: str) -> None:
        sender.send(address)
        sender.close()

    engine_main(index, sip_port_offset, rtp_port, listening)

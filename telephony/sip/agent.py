"""The SIP agent process: a control server in front of one SIP engine (or, with
`processes > 1`, a supervisor in front of several), and the thread that records what they learn.

Three kinds of thread, each with one job: the main thread owns PJSIP (telephony.sip.engine); the
control server's threads parse requests and read the trunks; one reporter thread hands what the
SIP side learned to the calls app (the injected `Calls`), so a slow database never stalls SIP and
events reach a call in the order they happened. This package never imports `calls`: the calls
app passes in what the agent may do with calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import Enum, auto
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from telephony.models import SipTrunk
from telephony.providers.base import StatusEvent
from telephony.selectors import sip_trunks_for_organization, sip_trunks_registering
from telephony.sip import control, protocol
from telephony.sip.numbers import parse_gateway
from telephony.sip.protocol import ErrorCode, Failure

if TYPE_CHECKING:
    from telephony.sip.engine import SipEngine, TrunkTarget

logger = logging.getLogger("telephony.sip.agent")

RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


class Recorded(Enum):
    """What became of an event the agent reported."""

    APPLIED = auto()
    DUPLICATE = auto()
    CLOSED = auto()  # a ringing/answered event for a call already over on our side: hang it up
    UNKNOWN = auto()

    @property
    def sentence(self) -> str:
        """In the providers' webhooks' words."""
        if self is Recorded.APPLIED:
            return "Applied."
        if self is Recorded.UNKNOWN:
            return "Ignored: unknown call."
        return "Ignored: already applied."


@dataclasses.dataclass(frozen=True)
class Calls:
    """What the agent may do with calls, given by the calls app."""

    # Record one event on the call (the same services the providers' webhooks use).
    report: Callable[[str, StatusEvent], Recorded]
    # The organization whose trunks may place this call now (a SIP call still queued), or None.
    may_dial: Callable[[str], int | None]
    # These calls were up, or being dialled, at that moment (the heartbeat).
    heard_from: Callable[[list[str], datetime], None]


@dataclasses.dataclass(frozen=True)
class Options:
    control: str = "127.0.0.1:5070"
    sip: str = "0.0.0.0:5060"  # the SIP side must be reachable by the trunk
    public_host: str = ""
    rtp_port: int = 4000
    trunk_response_timeout: float = 5.0
    registration_refresh: float = 60.0
    pjsip_log_level: int = 1
    processes: int = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = Options()
    parser.add_argument(
        "--control",
        default=settings.SIP_AGENTS[0] if settings.SIP_AGENTS else default.control,
        help="host:port of the control channel (loopback; default: the first SIP_AGENTS).",
    )
    parser.add_argument(
        "--sip",
        default=default.sip,
        help="host:port for SIP over UDP and TCP (engine k of --processes uses port + k).",
    )
    parser.add_argument("--public-host", default="", help="Address to advertise (NAT).")
    parser.add_argument("--rtp-port", type=int, default=default.rtp_port, help="First RTP port.")
    parser.add_argument(
        "--trunk-response-timeout",
        type=float,
        default=default.trunk_response_timeout,
        help="Seconds to wait for any answer from a trunk before trying the next one.",
    )
    parser.add_argument(
        "--registration-refresh",
        type=float,
        default=default.registration_refresh,
        help="Seconds between re-reading which trunks register.",
    )
    parser.add_argument(
        "--pjsip-log-level", type=int, default=default.pjsip_log_level, help="PJSIP's log level."
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=default.processes,
        help="SIP engine processes behind the one control address (each carries "
        f"{protocol.CALLS_PER_ENGINE} calls at most).",
    )


def options_from(parsed: Mapping[str, Any]) -> Options:
    names = {f.name for f in dataclasses.fields(Options)}
    return Options(**{name: parsed[name] for name in names if name in parsed})


class AgentConfigError(Exception):
    """Options the agent cannot start with; the message is for the operator."""


def trunk_targets(trunks: Iterable[SipTrunk]) -> tuple[TrunkTarget, ...]:
    from telephony.sip.engine import TrunkTarget

    targets = []
    for trunk in trunks:
        host, port = parse_gateway(trunk.gateway)
        targets.append(
            TrunkTarget(
                id=trunk.pk,
                name=trunk.name,
                host=host,
                port=port,
                transport=trunk.transport,
                username=trunk.username,
                password=trunk.password,
                caller_id_format=trunk.caller_id_format,
            )
        )
    return tuple(targets)


@dataclasses.dataclass(frozen=True)
class _Heartbeat:
    call_ids: list[str]
    at: datetime


class Reporter:
    """Hands the engine's events to the calls app, one at a time, off the SIP thread."""

    def __init__(self, calls: Calls, engine: SipEngine) -> None:
        self.calls = calls
        self.engine = engine
        self.events: queue.SimpleQueue[tuple[str, StatusEvent] | _Heartbeat | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._run, name="sip-reporter", daemon=True)

    def report(self, call_id: str, event: StatusEvent) -> None:
        self.events.put((call_id, event))

    def alive(self, call_ids: list[str]) -> None:
        self.events.put(_Heartbeat(call_ids=call_ids, at=timezone.now()))

    def _run(self) -> None:
        while (item := self.events.get()) is not None:
            if isinstance(item, _Heartbeat):
                self._stamp(item)
                continue
            call_id, event = item
            # A final event settles the money: ride out a database restart rather than lose it.
            for delay in RETRY_DELAYS:
                try:
                    self._apply(call_id, event)
                    break
                except (OperationalError, InterfaceError) as exc:
                    logger.warning("database unavailable (%s); retrying in %s s", exc, delay)
                    connection.close()
                    time.sleep(delay)
                except Exception:
                    logger.exception("recording %s for call %s failed", event.state, call_id)
                    break
                finally:
                    close_old_connections()
            else:
                logger.error("gave up recording %s for call %s", event.state, call_id)
        connection.close()

    def _apply(self, call_id: str, event: StatusEvent) -> None:
        recorded = self.calls.report(call_id, event)
        if recorded is Recorded.UNKNOWN:
            logger.warning("event for unknown call %s dropped", call_id)
        elif recorded is Recorded.CLOSED:
            # Nobody will pay for this call any more (it failed or ended on our side, e.g. the
            # web worker gave up waiting): do not let it run on the trunk.
            engine = self.engine
            engine.submit(lambda: engine.hangup(call_id, "the call was closed"))

    def _stamp(self, beat: _Heartbeat) -> None:
        # One try: the next heartbeat follows in a few seconds, and a database that is down
        # must not hold back the events queued behind it.
        try:
            self.calls.heard_from(beat.call_ids, beat.at)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("heartbeat of %s calls not recorded: %s", len(beat.call_ids), exc)
            connection.close()
        except Exception:
            logger.exception("heartbeat of %s calls not recorded", len(beat.call_ids))
        finally:
            close_old_connections()

    def stop(self) -> None:
        self.events.put(None)
        self.thread.join(timeout=30)


def keep_registrations(engine: SipEngine, stop: threading.Event, interval: float) -> None:
    """Register the trunks that ask for it, picking up admin changes every `interval` s."""
    while True:
        try:
            targets = trunk_targets(sip_trunks_registering())
            engine.submit(functools.partial(engine.sync_registrations, targets))
        except Exception:
            logger.exception("reading the registering trunks failed")
        finally:
            close_old_connections()
        if stop.wait(interval):
            connection.close()
            return


class EngineHandler:
    """Answers control requests with one engine (runs on the control server's threads)."""

    def __init__(self, engine: SipEngine, calls: Calls) -> None:
        self.engine = engine
        self.calls = calls

    def __call__(self, message: protocol.Request) -> protocol.Reply:
        try:
            return self._handle(message)
        except Exception:
            # Answer anyway: a silent agent would make the caller try the next one.
            logger.exception("control request %s failed", type(message).__name__)
            return Failure(ErrorCode.INTERNAL, "The SIP agent failed.")
        finally:
            connection.close()

    def _handle(self, message: protocol.Request) -> protocol.Reply:
        engine = self.engine
        timeout = settings.SIP_AGENT_TIMEOUT_SECONDS
        if isinstance(message, protocol.Dial):
            return self._dial(message)
        if isinstance(message, protocol.HangUp):
            call_id = message.call_id
            hung_up = engine.submit(lambda: engine.hangup(call_id, "hung up on request"))
            if hung_up.result(timeout=timeout):
                return protocol.Done()
            return Failure(ErrorCode.NOT_CARRIED, "This SIP agent is not carrying the call.")
        if isinstance(message, protocol.Find):
            call_id = message.call_id
            found = engine.submit(lambda: engine.find(call_id))
            return protocol.Found(tuple(found.result(timeout=5)))
        if isinstance(message, protocol.Status):
            live = engine.submit(lambda: engine.live_calls)
            return protocol.Load(calls=live.result(timeout=5), capacity=engine.capacity)
        if isinstance(message, protocol.Transfer):
            return self._transfer(message)
        return Failure(ErrorCode.BAD_REQUEST, "This SIP agent cannot do that.")

    def _transfer(self, message: protocol.Transfer) -> protocol.Reply:
        from telephony.sip.engine import TransferRefused

        engine = self.engine
        call_id, to_number = message.call_id, message.to_number
        timeout = settings.SIP_AGENT_TIMEOUT_SECONDS
        try:
            outcome = engine.submit(lambda: engine.transfer(call_id, to_number)).result(timeout)
            outcome.result(timeout=timeout)
        except TransferRefused as exc:
            carried = engine.submit(lambda: bool(engine.find(call_id))).result(timeout=5)
            code = ErrorCode.REFUSED if carried else ErrorCode.NOT_CARRIED
            return Failure(code, str(exc))
        return protocol.Done()

    def _dial(self, message: protocol.Dial) -> protocol.Reply:
        from telephony.sip.engine import DialRefused, DialRequest, EngineFull, EngineStopping

        organization_id = self.calls.may_dial(message.call_id)
        if organization_id is None:
            return Failure(ErrorCode.UNKNOWN_CALL, "No such call to place.")
        trunks = trunk_targets(sip_trunks_for_organization(organization_id=organization_id))
        if not trunks:
            return Failure(ErrorCode.NO_TRUNK, "The organization has no enabled SIP trunk.")
        request = DialRequest(
            call_id=message.call_id,
            from_number=message.from_number,
            to_number=message.to_number,
            time_limit_seconds=message.time_limit_seconds,
            ring_timeout_seconds=message.ring_timeout_seconds,
            trunks=trunks,
            media=message.media,
            organization_id=organization_id,
        )
        engine = self.engine
        future = engine.submit(lambda: engine.dial(request))
        try:
            try:
                sip_call_id = future.result(timeout=settings.SIP_AGENT_TIMEOUT_SECONDS)
            except TimeoutError:
                if future.cancel():  # never started: nothing was dialled
                    return Failure(ErrorCode.FULL, "This SIP agent is busy.")
                sip_call_id = future.result()  # started: its outcome is moments away
        except EngineFull:
            return Failure(ErrorCode.FULL, "This SIP agent is full.")
        except EngineStopping as exc:
            return Failure(ErrorCode.FULL, str(exc))
        except DialRefused as exc:
            return Failure(ErrorCode.REFUSED, str(exc))
        return protocol.Dialled(call_sid=sip_call_id)


def _loopback(address: str) -> tuple[str, int]:
    host, port = control.parse_address(address)
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise AgentConfigError("The control channel listens on loopback only.")
    return host, port


def run_engine(
    options: Options,
    calls: Calls,
    *,
    control_address: str,
    sip_port_offset: int = 0,
    ready: Callable[[str], None] = print,
    listening: Callable[[str], None] | None = None,
    registers: bool = True,
) -> None:
    """One engine with its control server, reporter and registrations, until SIGTERM/SIGINT
    (or `stop`)."""
    from telephony.sip.engine import SipEngine

    sip_host, sip_port = control.parse_address(options.sip)
    stop = threading.Event()
    engine = SipEngine(
        report=lambda call_id, event: reporter.report(call_id, event),
        alive=lambda call_ids: reporter.alive(call_ids),
        heartbeat_seconds=settings.SIP_AGENT_HEARTBEAT_SECONDS,
        sip_host=sip_host,
        sip_port=sip_port + sip_port_offset,
        rtp_port=options.rtp_port,
        public_host=options.public_host,
        log_level=options.pjsip_log_level,
        trunk_response_timeout=options.trunk_response_timeout,
        media_reconnect_seconds=settings.SIP_MEDIA_RECONNECT_SECONDS,
    )
    reporter = Reporter(calls, engine)
    engine.start()
    try:
        server = control.TypedControlServer(
            control_address, EngineHandler(engine, calls), control.control_secret()
        )
    except OSError as exc:
        raise AgentConfigError(f"Cannot listen on {control_address}: {exc}") from exc
    reporter.thread.start()
    server.start()
    if registers:
        threading.Thread(
            target=keep_registrations,
            args=(engine, stop, options.registration_refresh),
            name="sip-registrations",
            daemon=True,
        ).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    host, port = server.server_address[:2]
    if listening is not None:
        listening(f"{host!s}:{port}")
    sip_address = f"{sip_host}:{sip_port + sip_port_offset}"
    ready(f"sip engine ready: control {host!s}:{port}, SIP {sip_address}")
    sys.stdout.flush()
    try:
        engine.run(stop)
    finally:
        server.shutdown()
        server.server_close()
        reporter.stop()


def run(options: Options, calls: Calls, *, ready: Callable[[str], None] = print) -> None:
    """The agent, as `manage.py sip_agent` runs it: one engine in this process, or with
    `processes > 1` a supervisor here and the engines in processes of their own."""
    _loopback(options.control)
    control.parse_address(options.sip)
    if options.processes < 1:
        raise AgentConfigError("--processes must be at least 1.")
    if options.processes == 1:
        run_engine(options, calls, control_address=options.control, ready=ready)
        return
    from telephony.sip.supervisor import Supervisor

    def engine_main(
        index: int, sip_port_offset: int, rtp_port: int, listening: Callable[[str], None]
    ) -> None:
        run_engine(
            dataclasses.replace(options, rtp_port=rtp_port),
            calls,
            control_address=f"{_loopback(options.control)[0]}:0",
            sip_port_offset=sip_port_offset,
            ready=lambda line: logger.info("engine %s: %s", index, line),
            listening=listening,
            registers=index == 0,  # one binding per trunk, from the first engine
        )

    try:
        Supervisor(
            processes=options.processes,
            control_address=options.control,
            rtp_port=options.rtp_port,
            engine_main=engine_main,
            ready=ready,
        ).run()
    except OSError as exc:
        raise AgentConfigError(f"Cannot listen on {options.control}: {exc}") from exc

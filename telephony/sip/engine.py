"""The SIP engine: one process, one thread owning PJSIP (the `pjsua2-python` wheel).

Only the SIP agent (telephony.sip.agent, run by `manage.py sip_agent`) imports this module; web
workers never load the SIP stack.

PJSIP runs in polling mode (no worker threads of its own): the owner thread loops on
`libHandleEvents`, runs the commands other threads queued with `submit`, and enforces the ring
time-outs and time limits. Every pjsua2 object is created, used and released on that thread,
because PJSIP aborts the whole process (a C assert, not an exception) when it is touched from a
thread it does not know, and that includes a Call object being freed on one. What the agent
learns about a call leaves as plain `StatusEvent`s through the `report` callback; it never
waits on a database.

An answered call's audio goes through a `_BridgePort` (a PJSIP conference port of our own, at
8 kHz, 20 ms) to the media bridge (telephony.sip.bridge): PJSIP's media clock calls the port on
its own thread, and the port only hands bytes to and from the call's stream there.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pjsua2 as pj

from telephony.providers.base import StatusEvent
from telephony.sip.bridge import PCM_SILENCE, CallStream, MediaBridge, StreamCall, account_sid
from telephony.sip.numbers import format_number
from telephony.sip.protocol import CALLS_PER_ENGINE, CarriedCall, MediaTarget
from telephony.states import CallState

logger = logging.getLogger(__name__)

MAX_CALLS = CALLS_PER_ENGINE
# PJSUA_MAX_ACC: a ninth account is not an error but a C assert that kills the process, so the
# agent counts its accounts (one per INVITE, for its From) and never asks for a ninth.
MAX_ACCOUNTS = 8
# Accounts left for trunks that register once every call slot has its own.
MAX_REGISTRATIONS = MAX_ACCOUNTS - MAX_CALLS
REGISTRATION_SECONDS = 300
PJ_ETOOMANY = 70010
# Trunk-level failures: the next trunk may well succeed where this one could not.
FAILOVER_CODES = frozenset({408, 500, 502, 503, 504})
GC_INTERVAL_SECONDS = 5.0
TRANSFER_ANSWER_SECONDS = 4.0  # for the far end to answer a REFER
RTP_SAMPLE_SECONDS = 0.2  # the final event's packet counts are at most this old
SHUTDOWN_GRACE_SECONDS = 3.0
# Offer G.711 only: every carrier takes it and it keeps the INVITE small (under one UDP MTU).
CODECS = ("PCMU/8000", "PCMA/8000")
# The conference bridge runs at G.711's own rate, so no audio is resampled on the way.
CLOCK_RATE = 8000
FRAME_USEC = 20_000
SWITCH_INTERVAL_SECONDS = 0.0005

T = TypeVar("T")


class EngineFull(Exception):
    """Every call slot of this process is taken."""


class EngineStopping(Exception):
    """The agent is shutting down and takes no new work."""


class DialRefused(Exception):
    """No trunk would even take the INVITE (unresolvable host, no transport, ...)."""


class TransferRefused(Exception):
    """The call cannot be transferred, or the far end refused the REFER; says why."""


@dataclass(frozen=True)
class TrunkTarget:
    id: int
    name: str
    host: str
    port: int | None
    transport: str  # "udp" | "tcp"
    username: str
    password: str = field(repr=False)
    caller_id_format: str = "e164"

    def uri(self, user: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@{host}{port}{suffix}"


@dataclass(frozen=True)
class DialRequest:
    call_id: str  # ours (the Call's id), not SIP's
    from_number: str
    to_number: str
    time_limit_seconds: int
    ring_timeout_seconds: int
    trunks: tuple[TrunkTarget, ...]
    media: MediaTarget = field(default_factory=lambda: MediaTarget(stream_url=""))
    organization_id: int = 0


@dataclass
class Attempt:
    trunk: str
    sip_call_id: str = ""
    sip_status: int | None = None
    sip_reason: str = ""


def _frame_bytes(frame: pj.MediaFrame) -> bytes:
    """A frame's samples as bytes. SWIG copies a ByteVector element by element (~110 µs for a
    20 ms frame); reading the vector's data pointer (libstdc++ keeps it first) takes ~2 µs.
    `_check_frame_bytes` proves the layout once at start, else the slow copy is used."""
    buf = frame.buf
    if _FAST_FRAMES:
        begin = ctypes.c_void_p.from_address(int(buf.this)).value
        if begin:
            return ctypes.string_at(begin, min(frame.size, buf.size()))
        return b""
    return bytes(tuple(buf))[: frame.size]


_FAST_FRAMES = False


def _check_frame_bytes() -> None:
    global _FAST_FRAMES
    probe = pj.MediaFrame()
    probe.buf = pj.ByteVector(bytes(range(256)) * 2)
    probe.size = 320
    _FAST_FRAMES = True
    try:
        ok = _frame_bytes(probe) == (bytes(range(256)) * 2)[:320]
    except (ValueError, OSError):
        ok = False
    _FAST_FRAMES = ok
    if not ok:
        logger.warning("reading media frames the slow way (unexpected ByteVector layout)")


class _BridgePort(pj.AudioMediaPort):
    """The call's audio at the conference bridge. Called on PJSIP's media clock thread, every
    20 ms each way; it touches no other PJSIP object."""

    def __init__(self) -> None:
        super().__init__()
        self.stream: CallStream | None = None

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        stream = self.stream
        frame.buf = pj.ByteVector(stream.next_frame() if stream is not None else PCM_SILENCE)
        frame.size = len(PCM_SILENCE)
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        stream = self.stream
        if stream is not None and frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size:
            stream.received(_frame_bytes(frame))


class _Leg(pj.Call):
    """One INVITE dialog through one trunk. Callbacks run on the owner thread (polling mode)."""

    def __init__(self, account: pj.Account, agent: SipEngine, dial: _Dial) -> None:
        super().__init__(account)
        self.account: pj.Account | None = account  # must outlive the call
        self.agent: SipEngine | None = agent
        self.dial: _Dial | None = dial
        self.sip_call_id = ""
        self.disconnected = False
        self.rtp: dict[str, int] = {}
        self.rtp_sampled_at = 0.0
        self.port: _BridgePort | None = None
        self.stream: CallStream | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.agent is not None:
            self.agent._leg_state(self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        if self.agent is not None:
            self.agent._leg_media(self)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        if self.stream is not None:
            self.stream.dtmf(prm.digit)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        if self.agent is not None:
            self.agent._transfer_status(self, prm.statusCode, prm.reason, prm.finalNotify)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        # A 100 Trying moves no INVITE-session state, but it proves the gateway is alive.
        tsx = prm.e.body.tsxState.tsx
        if self.dial is not None and tsx.method == "INVITE" and tsx.statusCode >= 100:
            self.dial.responded = True


@dataclass(eq=False)
class _Dial:
    """One of our calls across its trunk attempts."""

    request: DialRequest
    trunk_index: int = 0
    leg: _Leg | None = None
    attempts: list[Attempt] = field(default_factory=list)
    ringing: bool = False
    answered_at: float | None = None
    deadline: float = 0.0
    hangup_reason: str = ""
    hangup_state: str = ""
    responded: bool = False  # any response at all to this attempt's INVITE
    response_deadline: float = 0.0
    no_response: bool = False
    # A cold transfer asked for: its target, and the Future the REFER's answer settles.
    transfer_to: str = ""
    transfer_outcome: Future[None] | None = None
    transfer_deadline: float = 0.0

    @property
    def trunk(self) -> TrunkTarget:
        return self.request.trunks[self.trunk_index]


class _Registration(pj.Account):
    """A trunk's REGISTER binding, refreshed by PJSIP for as long as the account lives."""

    def __init__(self, trunk: TrunkTarget) -> None:
        super().__init__()
        self.trunk = trunk
        self.state = ""

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.state = f"{prm.code} {prm.reason}".strip()
        log = logger.info if 200 <= prm.code < 300 else logger.warning
        log("trunk %s: REGISTER %s", self.trunk.name, self.state)


class SipEngine:
    def __init__(
        self,
        *,
        report: Callable[[str, StatusEvent], None],
        alive: Callable[[list[str]], None] | None = None,
        heartbeat_seconds: float = 5.0,
        sip_host: str = "0.0.0.0",  # noqa: S104 - the SIP side must be reachable by the trunk
        sip_port: int = 5060,
        rtp_port: int = 4000,
        public_host: str = "",
        log_level: int = 1,
        trunk_response_timeout: float = 5.0,
        media_reconnect_seconds: float = 0.0,
    ) -> None:
        self._report = report
        self._alive = alive
        self._heartbeat_seconds = heartbeat_seconds
        self._sip_host = sip_host
        self._sip_port = sip_port
        self._rtp_port = rtp_port
        self._public_host = public_host
        self._log_level = log_level
        self._trunk_response_timeout = trunk_response_timeout
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._dials: dict[str, _Dial] = {}
        self._legs: set[_Leg] = set()
        self._ended: list[_Leg] = []
        self._retry: list[_Dial] = []
        self._stopping = False
        self._owner: threading.Thread | None = None
        self._ep: pj.Endpoint | None = None
        self._transports: dict[str, int] = {}
        self._accounts = 0
        self._registrations: dict[int, _Registration] = {}
        self._ports: list[_BridgePort] = []
        self._free_ports: list[_BridgePort] = []
        self._bridge = MediaBridge(
            reconnect_seconds=media_reconnect_seconds, on_end=self._stream_ended
        )

    # ---- any thread -------------------------------------------------------------------------

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the owner thread; the Future carries its result or exception."""
        future: Future[T] = Future()
        if self._stopping:
            future.set_exception(EngineStopping("The SIP engine is shutting down."))
        else:
            self._commands.put((fn, future))
        return future

    # ---- owner thread -----------------------------------------------------------------------

    def start(self) -> None:
        self._owner = threading.current_thread()
        # PJSIP's media clock calls into Python (the bridge ports) every 20 ms per call and
        # must take the GIL each time: a short switch interval keeps it from waiting out the
        # default 5 ms behind the bridge's or the owner's Python code.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # polling mode: every callback runs inside libHandleEvents
        cfg.uaConfig.maxCalls = MAX_CALLS
        cfg.uaConfig.userAgent = "burki-sip-agent"
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.clockRate = CLOCK_RATE
        cfg.medConfig.sndClockRate = CLOCK_RATE
        cfg.medConfig.audioFramePtime = FRAME_USEC // 1000
        cfg.medConfig.ecTailLen = 0  # no echo canceller: there is no loudspeaker here
        cfg.medConfig.noVad = True  # the bot hears every frame, silence included
        cfg.logConfig.level = self._log_level
        cfg.logConfig.consoleLevel = self._log_level
        ep.libInit(cfg)
        for name, kind in (("udp", pj.PJSIP_TRANSPORT_UDP), ("tcp", pj.PJSIP_TRANSPORT_TCP)):
            tcfg = pj.TransportConfig()
            tcfg.port = self._sip_port
            tcfg.boundAddress = "" if self._sip_host == "0.0.0.0" else self._sip_host  # noqa: S104
            if self._public_host:
                tcfg.publicAddress = self._public_host
            self._transports[name] = ep.transportCreate(kind, tcfg)
        ep.audDevManager().setNullDev()  # the wheel has no sound device; RTP still flows
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        for priority, codec_id in zip((255, 254), CODECS, strict=True):
            ep.codecSetPriority(codec_id, priority)
        ep.libStart()
        self._ep = ep
        _check_frame_bytes()
        self._bridge.start()
        # Cyclic garbage collection could free a pjsua2 object on another thread: collect only
        # here, on a schedule (see run()).
        gc.disable()
        logger.info(
            "sip agent: SIP on %s:%s (udp, tcp), RTP from port %s, %s calls at most",
            self._sip_host,
            self._sip_port,
            self._rtp_port,
            MAX_CALLS,
        )

    def run(self, stop: threading.Event) -> None:
        assert self._ep is not None, "start() first"
        next_gc = time.monotonic() + GC_INTERVAL_SECONDS
        next_beat = time.monotonic()
        while not stop.is_set():
            self._ep.libHandleEvents(10)
            self._drain_commands()
            self._run_retries()
            self._enforce_deadlines()
            self._release_ended()
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + self._heartbeat_seconds
            if time.monotonic() >= next_gc:
                gc.collect()
                next_gc = time.monotonic() + GC_INTERVAL_SECONDS
        self._shutdown()

    capacity = MAX_CALLS

    @property
    def live_calls(self) -> int:
        return sum(1 for leg in self._legs if not leg.disconnected)

    def dial(self, request: DialRequest) -> str:
        """Send the INVITE through the first trunk that takes it; returns its SIP Call-ID."""
        if request.call_id in self._dials:
            raise DialRefused("This call is already being dialled.")
        if not request.trunks:
            raise DialRefused("The organization has no enabled SIP trunk.")
        if self.live_calls >= MAX_CALLS:
            raise EngineFull()
        dial = _Dial(request=request)
        while True:
            try:
                leg = self._invite(dial)
            except pj.Error as exc:
                dial.attempts.append(Attempt(dial.trunk.name, sip_reason=exc.reason))
                if dial.trunk_index + 1 >= len(request.trunks):
                    refused = "; ".join(f"{a.trunk}: {a.sip_reason}" for a in dial.attempts)
                    raise DialRefused(f"No SIP trunk took the call ({refused}).") from None
                dial.trunk_index += 1
                continue
            self._dials[request.call_id] = dial
            self._beat()  # at once: this process may die before the next beat
            return leg.sip_call_id

    def find(self, call_id: str) -> list[CarriedCall]:
        """Whether this agent is placing the call: its state and first Call-ID (the call_sid)."""
        dial = self._dials.get(call_id)
        if dial is None:
            return []
        if dial.answered_at is not None:
            state = CallState.IN_PROGRESS
        else:
            state = CallState.RINGING if dial.ringing else CallState.INITIATED
        first = dial.attempts[0].sip_call_id if dial.attempts else ""
        return [CarriedCall(state=state, sip_call_id=first)]

    def transfer(self, call_id: str, to_number: str) -> Future[None]:
        """Send REFER: the callee is to call `to_number` through the same trunk (a cold
        transfer). The Future settles when the far end answers the REFER; once the new call is
        up (a NOTIFY with 2xx) we hang up, and the call ends `transferred to ...`."""
        dial = self._dials.get(call_id)
        leg = dial.leg if dial is not None else None
        if dial is None or leg is None or leg.disconnected or dial.answered_at is None:
            raise TransferRefused("This SIP agent is not carrying that call in progress.")
        if dial.transfer_outcome is not None or dial.hangup_reason:
            raise TransferRefused("The call is already being transferred or hung up.")
        trunk = dial.trunk
        target = trunk.uri(format_number(to_number, trunk.caller_id_format))
        outcome: Future[None] = Future()
        try:
            leg.xfer(target, pj.CallOpParam(True))
        except pj.Error as exc:
            raise TransferRefused(f"The REFER could not be sent ({exc.reason}).") from None
        dial.transfer_to = to_number
        dial.transfer_outcome = outcome
        dial.transfer_deadline = time.monotonic() + TRANSFER_ANSWER_SECONDS
        logger.info("call %s: REFER to %s", call_id, target)
        return outcome

    def _transfer_status(self, leg: _Leg, code: int, reason: str, final: bool) -> None:
        dial = leg.dial
        if dial is None or dial.transfer_outcome is None:
            return
        outcome = dial.transfer_outcome
        if code >= 300:
            if not outcome.done():
                outcome.set_exception(
                    TransferRefused(f"The far end refused the transfer ({code} {reason}).")
                )
            logger.warning("call %s: transfer failed: %s %s", dial.request.call_id, code, reason)
            dial.transfer_outcome = None  # the call goes on; another transfer may be asked for
            return
        if not outcome.done():
            outcome.set_result(None)  # 202 Accepted, or the first NOTIFY
        if 200 <= code < 300 and final:
            # The callee is talking to the new number: our part of the call is over.
            self._hang_up(dial, f"transferred to {dial.transfer_to}")

    def hangup(self, call_id: str, reason: str) -> bool:
        dial = self._dials.get(call_id)
        if dial is None or dial.leg is None or dial.leg.disconnected:
            return False
        self._hang_up(dial, reason)
        return True

    def sync_registrations(self, trunks: tuple[TrunkTarget, ...]) -> None:
        """Register exactly these trunks (new or changed ones afresh). Each REGISTER's answer
        arrives later, on this thread's event loop, and is logged there (onRegState)."""
        wanted = {trunk.id: trunk for trunk in trunks[:MAX_REGISTRATIONS]}
        if len(trunks) > MAX_REGISTRATIONS:
            logger.warning(
                "only %s registering trunks per agent; not registering %s",
                MAX_REGISTRATIONS,
                ", ".join(t.name for t in trunks[MAX_REGISTRATIONS:]),
            )
        for trunk_id, registration in list(self._registrations.items()):
            if wanted.get(trunk_id) != registration.trunk:
                del self._registrations[trunk_id]
                registration.shutdown()  # sends the un-REGISTER
                self._accounts -= 1
                # The account is deleted with it, so no onRegState will report this one.
                logger.info("trunk %s: un-REGISTER sent", registration.trunk.name)
        for trunk_id, trunk in wanted.items():
            if trunk_id in self._registrations or self._accounts >= MAX_ACCOUNTS:
                continue
            registration = _Registration(trunk)
            acfg = self._account_config(trunk, trunk.username or "burki")
            host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
            port = f":{trunk.port}" if trunk.port else ""
            suffix = ";transport=tcp" if trunk.transport == "tcp" else ""
            acfg.regConfig.registrarUri = f"sip:{host}{port}{suffix}"
            acfg.regConfig.timeoutSec = REGISTRATION_SECONDS
            registration.create(acfg)
            self._accounts += 1
            self._registrations[trunk_id] = registration

    # ---- internals (owner thread) -----------------------------------------------------------

    def _drain_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _account(self, dial: _Dial) -> pj.Account:
        self._release_ended()
        if self._accounts >= MAX_ACCOUNTS:
            raise EngineFull()
        trunk = dial.trunk
        acfg = self._account_config(
            trunk, format_number(dial.request.from_number, trunk.caller_id_format)
        )
        # A SIP-level session keep-alive is the trunk's business; ours is the time limit.
        account = pj.Account()
        account.create(acfg)
        self._accounts += 1
        return account

    def _account_config(self, trunk: TrunkTarget, user: str) -> pj.AccountConfig:
        acfg = pj.AccountConfig()
        acfg.idUri = trunk.uri(user)
        acfg.regConfig.registrarUri = ""  # calls go out without one; see sync_registrations
        acfg.sipConfig.transportId = self._transports[trunk.transport]
        if trunk.username:
            acfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", trunk.username, 0, trunk.password)
            )
        acfg.mediaConfig.transportConfig.port = self._rtp_port
        acfg.mediaConfig.transportConfig.portRange = MAX_CALLS * 2 * 4
        if self._sip_host != "0.0.0.0":  # noqa: S104
            acfg.mediaConfig.transportConfig.boundAddress = self._sip_host
        if self._public_host:
            acfg.mediaConfig.transportConfig.publicAddress = self._public_host
        return acfg

    def _invite(self, dial: _Dial) -> _Leg:
        trunk = dial.trunk
        account = self._account(dial)
        leg = _Leg(account, self, dial)
        dial.leg = leg
        self._legs.add(leg)  # before makeCall: its callbacks may run inside it
        uri = trunk.uri(format_number(dial.request.to_number, trunk.caller_id_format))
        try:
            leg.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            self._legs.discard(leg)
            dial.leg = None
            self._release(leg)
            if exc.status == PJ_ETOOMANY:
                raise EngineFull() from None
            raise
        leg.sip_call_id = leg.getInfo().callIdString
        dial.attempts.append(Attempt(trunk.name, leg.sip_call_id))
        now = time.monotonic()
        dial.deadline = now + dial.request.ring_timeout_seconds
        dial.responded = dial.no_response = False
        dial.response_deadline = now + self._trunk_response_timeout
        logger.info(
            "call %s: INVITE %s via trunk %s (Call-ID %s)",
            dial.request.call_id,
            uri,
            trunk.name,
            leg.sip_call_id,
        )
        return leg

    def _leg_state(self, leg: _Leg) -> None:
        dial = leg.dial
        if dial is None or leg.disconnected:
            return
        info = leg.getInfo()
        if not leg.sip_call_id:
            leg.sip_call_id = info.callIdString
        base = {"sip_call_id": leg.sip_call_id, "trunk": dial.trunk.name}
        if info.state == pj.PJSIP_INV_STATE_EARLY and not dial.ringing:
            if info.lastStatusCode in (180, 183):
                dial.ringing = True
                raw = {**base, "sip_status": info.lastStatusCode, "sip_reason": info.lastReason}
                self._emit(dial, CallState.RINGING, raw=raw)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and dial.answered_at is None:
            dial.answered_at = time.monotonic()
            dial.deadline = dial.answered_at + dial.request.time_limit_seconds
            media = {
                "stream_url": dial.request.media.stream_url,
                "bridged": self._bridge_call(dial, leg),
            }
            self._emit(dial, CallState.IN_PROGRESS, raw={**base, "media": media})
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            leg.disconnected = True
            self._ended.append(leg)
            code, reason = info.lastStatusCode, info.lastReason
            if dial.no_response:
                code, reason = 408, f"No response within {self._trunk_response_timeout:g} s"
            attempt = dial.attempts[-1] if dial.attempts else Attempt(dial.trunk.name)
            attempt.sip_status = code
            attempt.sip_reason = reason
            duration = info.connectDuration.sec + (1 if info.connectDuration.msec >= 500 else 0)
            self._after_disconnect(dial, leg, code, reason, duration)

    def _leg_media(self, leg: _Leg) -> None:
        # RTP flows both ways through the leg's bridge port from the moment media is up
        # (silence until the call is answered and its stream opens).
        try:
            audio = leg.getAudioMedia(-1)
        except pj.Error:
            return
        if leg.port is None:
            leg.port = self._take_port()
            leg.port.stream = leg.stream
        audio.startTransmit(leg.port)
        leg.port.startTransmit(audio)

    def _take_port(self) -> _BridgePort:
        # Bridge ports are made once and reused, never destroyed while PJSIP's media clock
        # runs: a port freed on this thread while the clock thread calls it crashes the process
        # (the conference bridge removes ports asynchronously).
        if self._free_ports:
            return self._free_ports.pop()
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.clockRate = CLOCK_RATE
        fmt.channelCount = 1
        fmt.bitsPerSample = 16
        fmt.frameTimeUsec = FRAME_USEC
        port = _BridgePort()
        port.createPort(f"bridge-{len(self._ports)}", fmt)
        self._ports.append(port)
        return port

    def _give_back_port(self, leg: _Leg) -> None:
        # The call has disconnected: PJSIP took its media, and the port's links, away with it.
        port, leg.port = leg.port, None
        if port is not None:
            port.stream = None
            self._free_ports.append(port)

    def _bridge_call(self, dial: _Dial, leg: _Leg) -> bool:
        media = dial.request.media
        if not media.stream_url:
            return False
        first = dial.attempts[0].sip_call_id if dial.attempts else leg.sip_call_id
        parameters = {
            **media.parameters,
            "from": dial.request.from_number,
            "to": dial.request.to_number,
            "from_number": dial.request.from_number,
            "to_number": dial.request.to_number,
        }
        leg.stream = self._bridge.open(
            StreamCall(
                call_id=dial.request.call_id,
                call_sid=first,
                account_sid=account_sid(dial.request.organization_id),
                stream_url=media.stream_url,
                parameters=parameters,
            )
        )
        if leg.port is not None:
            leg.port.stream = leg.stream
        return True

    def _stream_ended(self, call_id: str, reason: str) -> None:
        # From the bridge's thread: the hang-up itself runs here, on the owner thread.
        self.submit(lambda: self.hangup(call_id, reason))

    def _after_disconnect(
        self, dial: _Dial, leg: _Leg, code: int, reason: str, duration: int
    ) -> None:
        status = f"{code} {reason}".strip()
        if dial.answered_at is not None:
            why = dial.hangup_reason or "callee hung up (BYE)"
            self._finish(dial, CallState.COMPLETED, why, leg, code, reason, duration)
        elif dial.hangup_reason:
            self._finish(dial, dial.hangup_state, dial.hangup_reason, leg, code, reason)
        elif (
            code in FAILOVER_CODES
            and not dial.ringing
            and not self._stopping
            and dial.trunk_index + 1 < len(dial.request.trunks)
        ):
            logger.info(
                "call %s: trunk %s failed (%s), trying the next trunk",
                dial.request.call_id,
                dial.trunk.name,
                status,
            )
            dial.trunk_index += 1
            dial.leg = None
            self._retry.append(dial)  # from the loop, not from inside PJSIP's callback
        elif code in (486, 600):
            self._finish(dial, CallState.BUSY, status, leg, code, reason)
        elif code in (480, 487) or (code == 408 and dial.ringing):
            self._finish(dial, CallState.NO_ANSWER, status, leg, code, reason)
        else:
            self._finish(dial, CallState.FAILED, status, leg, code, reason)

    def _finish(
        self,
        dial: _Dial,
        state: str,
        why: str,
        leg: _Leg | None,
        code: int | None = None,
        reason: str = "",
        duration: int = 0,
    ) -> None:
        raw: dict[str, Any] = {
            "sip_call_id": leg.sip_call_id if leg else "",
            "trunk": dial.trunk.name,
            "sip_status": code,
            "sip_reason": reason,
            "attempts": [vars(a) for a in dial.attempts],
        }
        if leg is not None and leg.rtp:
            raw["rtp"] = dict(leg.rtp)
        if leg is not None and leg.stream is not None:
            leg.stream.close()
            raw["media"] = leg.stream.stats.as_detail()
        self._dials.pop(dial.request.call_id, None)
        self._emit(
            dial,
            state,
            raw=raw,
            reason=why,
            duration=duration if state == CallState.COMPLETED else 0,
        )

    def _emit(
        self, dial: _Dial, state: str, *, raw: dict[str, Any], reason: str = "", duration: int = 0
    ) -> None:
        event = StatusEvent(
            state=state,
            provider_call_id=str(raw.get("sip_call_id") or ""),
            duration_seconds=duration if state == CallState.COMPLETED else None,
            reason=reason,
            raw=raw,
        )
        logger.info("call %s: %s %s", dial.request.call_id, state, reason)
        self._report(dial.request.call_id, event)

    def _run_retries(self) -> None:
        while self._retry:
            dial = self._retry.pop(0)
            while True:
                try:
                    self._invite(dial)
                    break
                except EngineFull:
                    self._finish(dial, CallState.FAILED, "The SIP engine is full.", None)
                    break
                except pj.Error as exc:
                    dial.attempts.append(Attempt(dial.trunk.name, sip_reason=exc.reason))
                    if dial.trunk_index + 1 >= len(dial.request.trunks):
                        last = dial.attempts[-2] if len(dial.attempts) > 1 else dial.attempts[-1]
                        why = f"{last.sip_status or ''} {last.sip_reason}".strip()
                        self._finish(dial, CallState.FAILED, why, None)
                        break
                    dial.trunk_index += 1

    def _hang_up(self, dial: _Dial, reason: str, state: str = CallState.CANCELED) -> None:
        leg = dial.leg
        if leg is None or leg.disconnected or dial.hangup_reason:
            return
        answered = dial.answered_at is not None
        dial.hangup_reason = f"{reason} ({'BYE' if answered else 'CANCEL'} sent)"
        dial.hangup_state = CallState.COMPLETED if answered else state
        try:
            leg.hangup(pj.CallOpParam())
        except pj.Error as exc:
            logger.warning("call %s: hang-up failed: %s", dial.request.call_id, exc.reason)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for dial in list(self._dials.values()):
            leg = dial.leg
            if leg is None or leg.disconnected:
                continue
            outcome = dial.transfer_outcome
            if outcome is not None and not outcome.done() and now >= dial.transfer_deadline:
                outcome.set_exception(TransferRefused("The far end did not answer the REFER."))
                dial.transfer_outcome = None
            if dial.answered_at is not None and now - leg.rtp_sampled_at >= RTP_SAMPLE_SECONDS:
                leg.rtp_sampled_at = now
                self._sample_rtp(leg)
            if (
                not dial.responded
                and not dial.no_response
                and not dial.hangup_reason
                and now >= dial.response_deadline
            ):
                # Silence from the gateway (down, firewalled, wrong port): PJSIP itself would
                # wait out Timer B (32 s). Give up on this trunk now and let failover decide.
                dial.no_response = True
                try:
                    leg.hangup(pj.CallOpParam())
                except pj.Error as exc:
                    logger.warning("call %s: hang-up failed: %s", dial.request.call_id, exc.reason)
                continue
            if dial.hangup_reason or now < dial.deadline:
                continue
            if dial.answered_at is None:
                limit = dial.request.ring_timeout_seconds
                self._hang_up(dial, f"no answer within {limit} s", CallState.NO_ANSWER)
            else:
                self._hang_up(dial, f"time limit of {dial.request.time_limit_seconds} s reached")

    def _beat(self) -> None:
        # Every call being dialled or talked, so that if this process dies without a word
        # (SIGKILL, its machine lost) the sweep knows when each was last up.
        if self._alive is not None and self._dials:
            self._alive(list(self._dials))

    def _sample_rtp(self, leg: _Leg) -> None:
        try:
            stat = leg.getStreamStat(0)
        except pj.Error:
            return
        leg.rtp = {
            "packets_sent": stat.rtcp.txStat.pkt,
            "packets_received": stat.rtcp.rxStat.pkt,
            "packets_lost": stat.rtcp.rxStat.loss,
            "packets_discarded": stat.rtcp.rxStat.discard,
            # What PJSIP's own jitter buffer adds between RTP in and the bridge port.
            "jitter_buffer_ms_avg": stat.jbuf.avgDelayMsec,
            "jitter_buffer_ms_max": stat.jbuf.maxDelayMsec,
            "jitter_buffer_discarded": stat.jbuf.discard,
            "jitter_buffer_lost": stat.jbuf.lost,
        }

    def _release_ended(self) -> None:
        while self._ended:
            leg = self._ended.pop()
            self._legs.discard(leg)
            self._release(leg)

    def _release(self, leg: _Leg) -> None:
        # Drop every reference here, on the owner thread, so the Call is freed here too.
        account = leg.account
        if leg.dial is not None and leg.dial.leg is leg:
            leg.dial.leg = None
        if leg.stream is not None:
            leg.stream.close()
        self._give_back_port(leg)
        leg.account = leg.agent = leg.dial = leg.stream = None
        del leg
        if account is not None:
            account.shutdown()
            self._accounts -= 1

    def _shutdown(self) -> None:
        """Hang up what we hold, wait briefly for the far ends, and report every call's end."""
        self._stopping = True
        self._drain_commands_refusing()
        for call_id in list(self._dials):
            self._hang_up(self._dials[call_id], "agent shut down")
        assert self._ep is not None
        grace = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self.live_calls and time.monotonic() < grace:
            self._ep.libHandleEvents(10)
        self._retry.clear()
        for call_id in list(self._dials):
            self._record_unconfirmed_end(self._dials[call_id])
        self._ended.extend(self._legs)
        self._release_ended()
        self.sync_registrations(())
        self._bridge.stop()
        # Stop the media clock (the null sound device drives it) before the ports are freed.
        self._ep.audDevManager().setNoDev()
        self._free_ports.clear()
        self._ports.clear()
        # No local name may keep a Call alive past libDestroy: freeing it then aborts.
        gc.collect()
        self._ep.libDestroy()
        self._ep = None
        gc.enable()

    def _record_unconfirmed_end(self, dial: _Dial) -> None:
        # The far end never confirmed our CANCEL/BYE in time: record the end ourselves.
        state = CallState.COMPLETED if dial.answered_at is not None else CallState.CANCELED
        why = dial.hangup_reason or "agent shut down"
        duration = int(time.monotonic() - dial.answered_at) if dial.answered_at else 0
        self._finish(dial, state, why, dial.leg, duration=duration)

    def _drain_commands_refusing(self) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineStopping("The SIP engine is shutting down."))

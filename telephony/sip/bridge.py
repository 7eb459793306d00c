"""The media bridge: an answered SIP call's audio to and from the assistant's media stream.

Each call's stream is a WebSocket client speaking Twilio Media Streams (JSON text frames: see
the README), so a bot written for Twilio (Pipecat's `parse_telephony_websocket` and
`TwilioFrameSerializer`, for one) serves SIP calls unchanged. One asyncio loop, on its own
thread, carries every stream of an engine.

Audio crosses threads at one place each way, both driven by PJSIP's 20 ms media clock:
`CallStream.received` (a frame decoded from RTP, handed to the loop to send) and
`CallStream.next_frame` (the frame to play, taken from the jitter buffer the bot's audio
fills). Neither touches a PJSIP object: the engine's port does that on the clock's own thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidURI,
    WebSocketException,
)

from telephony.sip import g711

logger = logging.getLogger(__name__)

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
PCM_SILENCE = bytes(2 * FRAME_BYTES)
# Playout starts once this much of the bot's audio is queued (or the first frame has waited
# this long): the bot's chunks arrive with their own jitter, and the clock takes one every 20 ms.
PREFILL_FRAMES = 2
MAX_QUEUED_FRAMES = 3000  # a minute of the bot's audio ahead of playout
OPEN_TIMEOUT_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.5
LATENCY_SAMPLES = 3000  # per call: enough for a p99


def stream_sid() -> str:
    return "MZ" + uuid.uuid4().hex


def account_sid(organization_id: int) -> str:
    """A stable AC… id per organization, in the shape Twilio's tools expect."""
    return "AC" + uuid.uuid5(uuid.NAMESPACE_URL, f"burki:organization:{organization_id}").hex


@dataclass(frozen=True)
class StreamCall:
    """What a stream says about its call in `start`."""

    call_id: str
    call_sid: str
    account_sid: str
    stream_url: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class _Mark:
    name: str


@dataclass
class StreamStats:
    connects: int = 0
    frames_in: int = 0  # from RTP while the stream was open
    frames_before_open: int = 0  # from RTP before the stream opened (not sent)
    frames_sent: int = 0
    frames_after_bot_left: int = 0  # from RTP between the bot's close and our BYE
    frames_from_bot: int = 0
    frames_played: int = 0
    underruns: int = 0  # the bot's audio ran dry: an utterance's end, or audio arriving late
    overflow_frames: int = 0
    dtmf_sent: int = 0
    marks_echoed: int = 0
    error: str = ""
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )

    def as_detail(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        detail: dict[str, Any] = {
            "connects": self.connects,
            "frames_in": self.frames_in,
            "frames_sent": self.frames_sent,
            "frames_lost": self.frames_in - self.frames_sent - self.frames_after_bot_left,
            "frames_after_bot_left": self.frames_after_bot_left,
            "frames_before_open": self.frames_before_open,
            "frames_from_bot": self.frames_from_bot,
            "frames_played": self.frames_played,
            "underruns": self.underruns,
            "dtmf": self.dtmf_sent,
            "marks": self.marks_echoed,
            "send_ms_p50": pct(0.5),
            "send_ms_p99": pct(0.99),
        }
        if self.overflow_frames:
            detail["overflow_frames"] = self.overflow_frames
        if self.error:
            detail["error"] = self.error
        return detail


class CallStream:
    """One call's stream: its WebSocket (with reconnects) and its jitter buffer."""

    def __init__(self, bridge: MediaBridge, call: StreamCall) -> None:
        self.bridge = bridge
        self.call = call
        self.stats = StreamStats()
        self._loop = bridge.loop
        self._lock = threading.Lock()  # the jitter buffer: clock thread vs loop thread
        self._queue: collections.deque[bytes | _Mark] = collections.deque()
        self._queued_frames = 0
        self._partial = bytearray()
        self._primed = False
        self._first_queued_at = 0.0
        # ("media", PCM, when it arrived) | ("dtmf", digit, 0) | ("mark", name, 0); None: stop.
        self._outbox: asyncio.Queue[tuple[str, bytes | str, float] | None] = asyncio.Queue()
        self._open = False
        self._closing = False
        self._stream_sid = ""
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # ---- any thread ---------------------------------------------------------------------

    def received(self, pcm: bytes) -> None:
        """One 20 ms frame from the callee (16-bit PCM), on PJSIP's media clock."""
        if not self._open:
            self.stats.frames_before_open += 1
            return
        at = time.monotonic()
        self.stats.frames_in += 1
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, ("media", pcm, at))

    def next_frame(self) -> bytes:
        """The next 20 ms to play to the callee (16-bit PCM), on PJSIP's media clock."""
        marks: list[str] = []
        frame: bytes | None = None
        with self._lock:
            while self._queue and isinstance(head := self._queue[0], _Mark):
                self._queue.popleft()
                marks.append(head.name)
            if not self._primed and self._queued_frames:
                waited = time.monotonic() - self._first_queued_at
                self._primed = self._queued_frames >= PREFILL_FRAMES or waited >= 0.04
            if self._primed:
                if self._queued_frames:
                    item = self._queue.popleft()
                    assert isinstance(item, bytes)
                    frame = item
                    self._queued_frames -= 1
                    self.stats.frames_played += 1
                    # Marks right behind this frame are echoed on the next tick, once it has
                    # been played out.
                else:
                    self._primed = False
                    self.stats.underruns += 1
        if marks:
            self._loop.call_soon_threadsafe(self._echo_marks, marks)
        return g711.ulaw_to_pcm(frame) if frame is not None else PCM_SILENCE

    def dtmf(self, digit: str) -> None:
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, ("dtmf", digit, 0.0))

    def close(self) -> None:
        """The call ended: say `stop` and close the socket."""
        self._loop.call_soon_threadsafe(self._close)

    # ---- the loop's thread --------------------------------------------------------------

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name=f"stream {self.call.call_id}")

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._outbox.put_nowait(None)
        if not self._open and self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        deadline: float | None = None
        while not self._closing:
            try:
                async with connect(
                    self.call.stream_url,
                    open_timeout=OPEN_TIMEOUT_SECONDS,
                    compression=None,
                    max_size=2**20,
                    user_agent_header="burki-sip-agent",
                ) as ws:
                    deadline = None
                    await self._serve(ws)
                if not self._closing:
                    self._closing = True
                    self.bridge.ended(self.call.call_id, "the assistant hung up")
                return
            except asyncio.CancelledError:
                return
            except (OSError, TimeoutError, InvalidURI, InvalidHandshake, WebSocketException) as exc:
                self._open = False
                self.stats.error = _describe(exc)
                if self._closing:
                    return
                now = time.monotonic()
                deadline = deadline or now + self.bridge.reconnect_seconds
                if now >= deadline:
                    self._closing = True
                    logger.warning("call %s: media stream failed: %s", self.call.call_id, exc)
                    self.bridge.ended(
                        self.call.call_id, f"the media stream failed ({self.stats.error})"
                    )
                    return
                logger.info("call %s: media stream down (%s), retrying", self.call.call_id, exc)
                await asyncio.sleep(min(RETRY_PAUSE_SECONDS, deadline - now))

    async def _serve(self, ws: ClientConnection) -> None:
        self.stats.connects += 1
        self._stream_sid = stream_sid()
        self._started_at = time.monotonic()
        sequence = 0
        chunk = 0

        async def send(event: str, body: dict[str, Any]) -> None:
            nonlocal sequence
            sequence += 1
            message = {
                "event": event,
                "sequenceNumber": str(sequence),
                "streamSid": self._stream_sid,
            }
            await ws.send(json.dumps(message | body))

        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await send(
            "start",
            {
                "start": {
                    "streamSid": self._stream_sid,
                    "accountSid": self.call.account_sid,
                    "callSid": self.call.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(self.call.parameters),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                }
            },
        )
        # Frames that arrived while the socket was down are not worth sending late.
        while not self._outbox.empty():
            if self._outbox.get_nowait() is None:
                self._closing = True
        self._open = not self._closing
        receiver = asyncio.create_task(self._receive(ws))
        try:
            while True:
                if receiver.done():
                    receiver.result()  # raises when the socket broke
                    self._open = False
                    # The bot hung up: what was on its way to it has nobody to go to.
                    while not self._outbox.empty():
                        item = self._outbox.get_nowait()
                        if item is None:
                            self._closing = True
                        elif item[0] == "media":
                            self.stats.frames_after_bot_left += 1
                    return
                getter = asyncio.ensure_future(self._outbox.get())
                await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                item = getter.result()
                if item is None:
                    stop = {"accountSid": self.call.account_sid, "callSid": self.call.call_sid}
                    await send("stop", {"stop": stop})
                    await ws.close()
                    return
                kind, value, at = item
                if isinstance(value, bytes):  # media
                    chunk += 1
                    payload = base64.b64encode(g711.pcm_to_ulaw(value)).decode()
                    media = {
                        "track": "inbound",
                        "chunk": str(chunk),
                        "timestamp": str(int((at - self._started_at) * 1000)),
                        "payload": payload,
                    }
                    await send("media", {"media": media})
                    self.stats.frames_sent += 1
                    self.stats.latencies.append(time.monotonic() - at)
                elif kind == "dtmf":
                    await send("dtmf", {"dtmf": {"track": "inbound_track", "digit": value}})
                    self.stats.dtmf_sent += 1
                elif kind == "mark":
                    await send("mark", {"mark": {"name": value}})
                    self.stats.marks_echoed += 1
        finally:
            self._open = False
            receiver.cancel()

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._handle(message)
        except ConnectionClosedOK:
            return

    def _handle(self, message: str | bytes) -> None:
        try:
            body = json.loads(message)
            event = body.get("event")
        except (ValueError, AttributeError):
            logger.warning("call %s: not a media-stream message", self.call.call_id)
            return
        if event == "media":
            try:
                audio = base64.b64decode(body["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                logger.warning("call %s: media without a base64 payload", self.call.call_id)
                return
            self._queue_audio(audio)
        elif event == "mark":
            name = str((body.get("mark") or {}).get("name", ""))
            with self._lock:
                self._flush_partial()
                self._queue.append(_Mark(name))
        elif event == "clear":
            with self._lock:
                marks = [item.name for item in self._queue if isinstance(item, _Mark)]
                self._queue.clear()
                self._queued_frames = 0
                self._partial.clear()
                self._primed = False
            self._echo_marks(marks)

    def _queue_audio(self, audio: bytes) -> None:
        with self._lock:
            self._partial += audio
            while len(self._partial) >= FRAME_BYTES:
                self._append_frame(bytes(self._partial[:FRAME_BYTES]))
                del self._partial[:FRAME_BYTES]

    def _flush_partial(self) -> None:
        if self._partial:
            padding = bytes([g711.SILENCE]) * (FRAME_BYTES - len(self._partial))
            self._append_frame(bytes(self._partial) + padding)
            self._partial.clear()

    def _append_frame(self, frame: bytes) -> None:
        if self._queued_frames >= MAX_QUEUED_FRAMES:
            self.stats.overflow_frames += 1
            return
        if not self._queued_frames:
            self._first_queued_at = time.monotonic()
        self._queue.append(frame)
        self._queued_frames += 1
        self.stats.frames_from_bot += 1

    def _echo_marks(self, marks: list[str]) -> None:
        for name in marks:
            self._outbox.put_nowait(("mark", name, 0.0))


class MediaBridge:
    """Every stream of one engine, on one asyncio loop in its own thread."""

    def __init__(self, *, reconnect_seconds: float, on_end: Callable[[str, str], None]) -> None:
        self.reconnect_seconds = reconnect_seconds
        self._on_end = on_end
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sip-media", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def open(self, call: StreamCall) -> CallStream:
        """Start the call's stream (from any thread); its frames flow once it is open."""
        stream = CallStream(self, call)
        self.loop.call_soon_threadsafe(stream.start)
        return stream

    def ended(self, call_id: str, reason: str) -> None:
        """The stream is over from its side: the engine hangs the call up."""
        self._on_end(call_id, reason)

    def stop(self, timeout: float = 3.0) -> None:
        """Let closing streams say `stop`, then end the loop."""

        async def drain() -> None:
            deadline = time.monotonic() + timeout
            current = asyncio.current_task()
            while time.monotonic() < deadline:
                pending = [t for t in asyncio.all_tasks() if t is not current]
                if not pending:
                    break
                await asyncio.sleep(0.02)
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout + 1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]

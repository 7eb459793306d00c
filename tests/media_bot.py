"""A voice bot as the assistant's media stream, built on Pipecat's own telephony pieces:
`parse_telephony_websocket` (transport detection) and `TwilioFrameSerializer` (frames to audio).

It listens on loopback with the `websockets` server, in a thread with its own event loop, and
records what each connection brought; what it does on its side (a tone, a close) is a script.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, OutputAudioRawFrame
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RATE = 8000


class _PipecatSocket:
    """What `parse_telephony_websocket` reads from: a FastAPI-style `iter_text()`."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def iter_text(self) -> AsyncIterator[str]:
        async for message in self.ws:
            yield message if isinstance(message, str) else message.decode()


@dataclass
class Session:
    """One stream as the bot saw it."""

    transport: str = ""
    call_data: Any = None
    raw: list[dict[str, Any]] = field(default_factory=list)  # every JSON frame, in order
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, int16 PCM)
    digits: list[tuple[float, str]] = field(default_factory=list)
    closed_by_peer: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    ws: ServerConnection | None = None
    serializer: TwilioFrameSerializer | None = None

    def pcm(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        chunks = [pcm for at, pcm in self.audio if since <= at < until]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def play(self, pcm: np.ndarray) -> None:
        """Send audio to the caller as a Pipecat output transport does: one serialized frame."""
        assert self.serializer is not None and self.ws is not None
        frame = OutputAudioRawFrame(
            audio=pcm.astype("<i2").tobytes(), sample_rate=RATE, num_channels=1
        )
        message = await self.serializer.serialize(frame)
        assert message is not None
        await self.ws.send(message)


Script = Callable[[Session, str], Awaitable[bool]]  # (session, event) -> keep going?


async def _listen_only(session: Session, event: str) -> bool:
    return True


class MediaBot:
    def __init__(self, port: int, script: Script = _listen_only) -> None:
        self.port = port
        self.script = script
        self.sessions: list[Session] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self._run, name="media-bot", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media-stream"

    def start(self) -> MediaBot:
        self.thread.start()
        assert self._ready.wait(10), "the bot did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(timeout=10)

    def wait_for_session(self, timeout: float = 20.0) -> Session:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sessions and self.sessions[-1].ended.is_set():
                return self.sessions[-1]
            time.sleep(0.05)
        raise AssertionError(f"no stream ended within {timeout} s ({len(self.sessions)} began)")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = self.loop.create_future()
        async with serve(self._handle, "127.0.0.1", self.port, compression=None):
            self._ready.set()
            await self._stop

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(ws=ws)
        self.sessions.append(session)
        try:
            await self._converse(session, ws)
        except ConnectionClosed:
            session.closed_by_peer = True
        finally:
            session.ended.set()

    async def _converse(self, session: Session, ws: ServerConnection) -> None:
        socket = _PipecatSocket(ws)
        transport, call_data = await parse_telephony_websocket(socket)
        session.transport, session.call_data = transport, call_data
        serializer = TwilioFrameSerializer(
            call_data["stream_id"],
            call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(sample_rate=RATE, auto_hang_up=False),
        )
        await serializer.setup(SimpleNamespace(audio_in_sample_rate=RATE))
        session.serializer = serializer
        if not await self.script(session, "start"):
            await ws.close()
            return
        async for message in ws:
            body = json.loads(message)
            session.raw.append(body)
            if body.get("event") == "stop":
                session.closed_by_peer = True
                return
            frame = await serializer.deserialize(message)
            now = time.monotonic()
            if isinstance(frame, InputAudioRawFrame):
                session.audio.append((now, np.frombuffer(frame.audio, dtype="<i2")))
                event = "audio"
            elif isinstance(frame, InputDTMFFrame):
                session.digits.append((now, frame.button.value))
                event = "dtmf"
            else:
                event = str(body.get("event"))
            if not await self.script(session, event):
                await ws.close()
                return
        session.closed_by_peer = True


def tone(frequency: float, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(pcm: np.ndarray) -> float:
    """The strongest frequency in the signal (Hann window, FFT)."""
    samples = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[:5] = 0  # leave DC out
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


def best_correlation(received: np.ndarray, reference: np.ndarray) -> float:
    """The highest normalized cross-correlation of `reference` anywhere in `received`."""
    a = received.astype(np.float64)
    b = reference.astype(np.float64)
    if len(a) < len(b) or not len(b):
        return 0.0
    size = 1 << (len(a) + len(b)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)[
        : len(a) - len(b) + 1
    ]
    window = np.convolve(a**2, np.ones(len(b)), mode="valid")
    scores = corr / (np.sqrt(window * np.sum(b**2)) + 1e-9)
    return float(np.max(scores))

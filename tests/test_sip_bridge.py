"""The media bridge on its own: a real WebSocket bot, and the test as PJSIP's 20 ms clock.

The whole path with SIPp and a Pipecat bot is in test_sip_media.py; here the jitter buffer's
rules are pinned down frame by frame: marks, clear, the bot's close, a dropped stream."""

from __future__ import annotations

import array
import base64
import json
import threading
import time
import warnings

import pytest
from websockets.sync.server import ServerConnection, serve

from telephony.sip import g711
from telephony.sip.bridge import PCM_SILENCE, CallStream, MediaBridge, StreamCall

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference the table codec is checked against (gone in Python 3.13)

PORT = 25943


def test_the_codec_matches_the_g711_reference_for_every_sample_and_code() -> None:
    every_sample = array.array("h", range(-32768, 32768)).tobytes()
    every_code = bytes(range(256))

    assert g711.pcm_to_ulaw(every_sample) == audioop.lin2ulaw(every_sample, 2)
    assert g711.ulaw_to_pcm(every_code) == audioop.ulaw2lin(every_code, 2)


class Bot:
    """A scripted bot: `script(ws)` runs once the stream's first two frames are in."""

    def __init__(self, script) -> None:
        self.script = script
        self.received: list[dict] = []
        self.connections = 0
        self.server = serve(self._handle, "127.0.0.1", PORT)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        for _ in range(2):
            self.received.append(json.loads(ws.recv()))
        self.script(self, ws)

    def events(self, name: str) -> list[dict]:
        return [m for m in self.received if m["event"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def frame(value: int) -> str:
    """One 20 ms media frame from the bot, every byte `value` (μ-law)."""
    payload = base64.b64encode(bytes([value]) * 160).decode()
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}})


def keep_reading(bot: Bot, ws: ServerConnection) -> None:
    for message in ws:
        bot.received.append(json.loads(message))


@pytest.fixture
def bridge():
    ended: list[tuple[str, str]] = []
    bridge = MediaBridge(reconnect_seconds=0, on_end=lambda *args: ended.append(args))
    bridge.start()
    yield bridge, ended
    bridge.stop()


def open_stream(bridge: MediaBridge) -> CallStream:
    return bridge.open(
        StreamCall(
            call_id="c1",
            call_sid="sip-call-id@host",
            account_sid="AC" + "0" * 32,
            stream_url=f"ws://127.0.0.1:{PORT}/media-stream",
            parameters={"call_id": "c1", "from_number": "+15551234567"},
        )
    )


def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def tick(stream: CallStream, n: int = 1) -> list[bytes]:
    return [stream.next_frame() for _ in range(n)]


def test_the_stream_opens_with_connected_and_start_then_sends_each_frame_as_media(bridge) -> None:
    media_bridge, _ = bridge
    bot = Bot(keep_reading)
    try:
        stream = open_stream(media_bridge)
        until(lambda: len(bot.received) >= 2 and stream.stats.connects)
        until(lambda: stream._open)
        pcm = array.array("h", [1000, -1000] * 80).tobytes()
        stream.received(pcm)
        stream.received(pcm)
        stream.dtmf("7")
        until(lambda: len(bot.received) >= 5)
    finally:
        stream.close()
        until(lambda: bot.events("stop"))
        bot.close()

    connected, start = bot.received[:2]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    sid = start["streamSid"]
    assert sid.startswith("MZ") and len(sid) == 34
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": sid,
        "start": {
            "streamSid": sid,
            "accountSid": "AC" + "0" * 32,
            "callSid": "sip-call-id@host",
            "tracks": ["inbound"],
            "customParameters": {"call_id": "c1", "from_number": "+15551234567"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    media = bot.events("media")
    assert [(m["sequenceNumber"], m["media"]["chunk"]) for m in media] == [("2", "1"), ("3", "2")]
    assert base64.b64decode(media[0]["media"]["payload"]) == g711.pcm_to_ulaw(pcm)
    assert media[0]["media"]["track"] == "inbound"
    assert bot.events("dtmf") == [
        {
            "event": "dtmf",
            "sequenceNumber": "4",
            "streamSid": sid,
            "dtmf": {"track": "inbound_track", "digit": "7"},
        }
    ]
    assert bot.events("stop") == [
        {
            "event": "stop",
            "sequenceNumber": "5",
            "streamSid": sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": "sip-call-id@host"},
        }
    ]


def test_a_mark_is_echoed_once_the_audio_before_it_has_played(bridge) -> None:
    media_bridge, _ = bridge

    def script(bot: Bot, ws: ServerConnection) -> None:
        for message in (frame(0x10), frame(0x20), frame(0x30), mark("first"), frame(0x40)):
            ws.send(message)
        ws.send(mark("second"))
        keep_reading(bot, ws)

    bot = Bot(script)
    try:
        stream = open_stream(media_bridge)
        until(lambda: stream.stats.frames_from_bot == 4)
        played = tick(stream, 3)
        time.sleep(0.1)
        marks_after_three = list(bot.events("mark"))
        played += tick(stream, 1)  # the tick after the third frame: "first" is due
        until(lambda: len(bot.events("mark")) == 1)
        played += tick(stream, 2)
        until(lambda: len(bot.events("mark")) == 2)
    finally:
        stream.close()
        bot.close()

    assert played[:4] == [g711.ulaw_to_pcm(bytes([v]) * 160) for v in (0x10, 0x20, 0x30, 0x40)]
    assert played[4:] == [PCM_SILENCE] * 2
    assert marks_after_three == []
    assert [m["mark"] for m in bot.events("mark")] == [{"name": "first"}, {"name": "second"}]


def test_clear_drops_the_queued_audio_and_echoes_every_pending_mark(bridge) -> None:
    media_bridge, _ = bridge

    def script(bot: Bot, ws: ServerConnection) -> None:
        for _ in range(50):
            ws.send(frame(0x22))
        ws.send(mark("a"))
        ws.send(frame(0x22))
        ws.send(mark("b"))
        time.sleep(0.2)
        ws.send(json.dumps({"event": "clear", "streamSid": "MZ1"}))
        keep_reading(bot, ws)

    bot = Bot(script)
    try:
        stream = open_stream(media_bridge)
        until(lambda: stream.stats.frames_from_bot == 51)
        tick(stream, 2)
        until(lambda: len(bot.events("mark")) == 2)
        after_clear = tick(stream, 3)
    finally:
        stream.close()
        bot.close()

    assert [m["mark"]["name"] for m in bot.events("mark")] == ["a", "b"]
    assert after_clear == [PCM_SILENCE] * 3
    assert stream.stats.frames_played == 2


def test_the_bots_close_asks_for_the_call_to_be_hung_up(bridge) -> None:
    media_bridge, ended = bridge
    bot = Bot(lambda bot, ws: ws.close())
    try:
        stream = open_stream(media_bridge)
        until(lambda: ended)
    finally:
        bot.close()

    assert ended == [("c1", "the assistant hung up")]
    assert stream.stats.connects == 1 and stream.stats.error == ""


def test_a_dropped_stream_is_reopened_within_the_reconnect_window(bridge) -> None:
    _, ended = bridge
    patient = MediaBridge(reconnect_seconds=5, on_end=lambda *args: ended.append(args))
    patient.start()

    def script(bot: Bot, ws: ServerConnection) -> None:
        if bot.connections == 1:
            ws.socket.close()  # the connection breaks: no close frame
            return
        keep_reading(bot, ws)

    bot = Bot(script)
    try:
        stream = open_stream(patient)
        until(lambda: bot.connections == 2 and stream._open)
        stream.received(PCM_SILENCE)
        until(lambda: bot.events("media"))
    finally:
        stream.close()
        until(lambda: bot.events("stop"))
        bot.close()
        patient.stop()

    assert ended == []
    assert stream.stats.connects == 2
    assert [m["event"] for m in bot.received].count("start") == 2

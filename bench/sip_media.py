"""Figures for bridged SIP calls on loopback: 16 calls at once, each with its audio bridged to a
bot that talks and listens (Twilio Media Streams), through one agent address.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/burki_media_bench \\
        .venv/bin/python bench/sip_media.py [--calls 16] [--seconds 10] [--processes 4]

The database is migrated and filled with the demo data (use a scratch one). A real agent
(`sip_agent --processes N`), SIPp answering every call and echoing its RTP (`-rtp_echo`), and a
bot in this process: it sends a numbered 20 ms frame every 20 ms, matches what comes back, and
hangs up (closes the socket) after `--seconds`.

Printed: frames lost (the bridge's own count, and the bot's numbered frames that never came
back), the latency the bridge adds per frame from PJSIP handing it over to the WebSocket send
(p50/p99), what PJSIP's jitter buffer holds before that, the bot -> RTP -> echo -> bot round
trip, CPU per call and memory per engine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["SIP_AGENT_SECRET"] = "sip-bench-secret"
os.environ["SIP_AGENTS"] = "127.0.0.1:25570"
os.environ["MEDIA_STREAM_URL"] = "ws://127.0.0.1:25944/media-stream"
os.environ["MAX_CONCURRENT_CALLS"] = "100"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402
from websockets.asyncio.server import ServerConnection, serve  # noqa: E402

from calls.models import Call  # noqa: E402

SIPP_PORT = 25560
BOT_PORT = 25944
TICK = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")


def marker(n: int) -> bytes:
    """Frame n of a stream: 160 bytes of one μ-law code (n mod 64, never 0x7F, the second code
    for zero, which would not survive μ-law -> PCM -> μ-law). The way back need not keep frame
    boundaries (PJSIP re-frames), so a returned frame is told by its most common byte."""
    return bytes([0x10 + n % 64]) * 160


def frame_code(frame: bytes) -> int | None:
    code, count = collections.Counter(frame).most_common(1)[0] if frame else (0, 0)
    return code - 0x10 if 0x10 <= code < 0x50 and count > 80 else None


class EchoBot:
    """Per stream: a numbered frame out every 20 ms, each one's round trip timed on return."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.round_trips: list[float] = []
        self.sent = 0
        self.returned = 0
        self.streams = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        async with serve(self._handle, "127.0.0.1", BOT_PORT, compression=None):
            self.ready.set()
            await asyncio.Future()

    async def _handle(self, ws: ServerConnection) -> None:
        self.streams += 1
        start = json.loads(await ws.recv())  # connected
        start = json.loads(await ws.recv())
        sid = start["streamSid"]
        sent_at: dict[int, float] = {}
        seen: set[int] = set()

        async def talk() -> None:
            begin = self.loop.time()
            n = 0
            while self.loop.time() - begin < self.seconds:
                sent_at[n] = time.monotonic()
                payload = base64.b64encode(marker(n)).decode()
                await ws.send(
                    json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})
                )
                self.sent += 1
                n += 1
                await asyncio.sleep(max(0.0, begin + n * TICK - self.loop.time()))
            await asyncio.sleep(0.5)  # the last frames' way back
            await ws.close()

        talker = asyncio.create_task(talk())
        try:
            async for message in ws:
                body = json.loads(message)
                if body.get("event") != "media":
                    continue
                code = frame_code(base64.b64decode(body["media"]["payload"]))
                if code is None or not sent_at:
                    continue
                # The latest frame sent with this code: a round trip is far below 64 frames.
                latest = max(sent_at)
                number = latest - (latest - code) % 64
                if number in sent_at and number not in seen:
                    seen.add(number)
                    self.returned += 1
                    self.round_trips.append(time.monotonic() - sent_at[number])
        finally:
            await talker


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """The process's proportional share of memory: pages shared with its siblings (the engines
    are forked from one supervisor) counted once between them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    out = io.StringIO()
    call_command("seed_demo", "--json", "--sip-gateway", f"127.0.0.1:{SIPP_PORT}", stdout=out)
    demo = json.loads(out.getvalue())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {demo['api_key']}")

    bot = EchoBot(args.seconds)
    bot.thread.start()
    bot.ready.wait(10)
    agent = subprocess.Popen(  # noqa: S603
        [
            *(sys.executable, "manage.py", "sip_agent", "--control", "127.0.0.1:25570"),
            *("--sip", "127.0.0.1:25580", "--rtp-port", "25600"),
            *("--processes", str(args.processes)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sipp = subprocess.Popen(  # noqa: S603
        [
            *("sipp", "-sf", str(ROOT / "tests/sipp/uas_answer_wait_bye.xml"), "-i", "127.0.0.1"),
            *("-p", str(SIPP_PORT), "-cp", "25760", "-mp", "25860", "-m", str(args.calls)),
            *("-nostdin", "-rtp_echo"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", 25570), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.1)
    time.sleep(1)  # idle figures
    engines = children(agent.pid)
    pids = [agent.pid, *engines]
    idle_rss = {pid: rss_mb(pid) for pid in engines}
    try:
        call_ids = []
        for _ in range(args.calls):
            response = client.post(
                "/calls/initiate",
                {"from_phone_number": demo["sip_phone_number"], "to_phone_number": "+15559876543"},
                format="json",
            )
            assert response.status_code == 200, response.content
            call_ids.append(response.json()["call_id"])
        time.sleep(1.0)  # every call answered and streaming
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        window_start = time.monotonic()
        peak_rss = dict(idle_rss)
        peak_pss = {pid: pss_mb(pid) for pid in engines}
        while time.monotonic() - window_start < args.seconds - 2:
            time.sleep(0.5)
            for pid in engines:
                peak_rss[pid] = max(peak_rss[pid], rss_mb(pid))
                peak_pss[pid] = max(peak_pss[pid], pss_mb(pid))
        cpu_used = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        supervisor_pss = pss_mb(agent.pid)
        window = time.monotonic() - window_start
        deadline = time.monotonic() + args.seconds + 30
        calls: list[Call] = []
        for call_id in call_ids:
            while True:
                call = Call.objects.get(pk=call_id)
                if call.is_final:
                    calls.append(call)
                    break
                assert time.monotonic() < deadline, f"call {call_id} is still {call.status}"
                time.sleep(0.1)
        sipp_code = sipp.wait(timeout=30)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        if sipp.poll() is None:
            sipp.kill()

    ended = [c.events.get(status=c.status).detail for c in calls]
    media = [e["media"] for e in ended]
    rtp = [e.get("rtp", {}) for e in ended]
    statuses = {c.status for c in calls}
    print(
        f"calls: {args.calls} at once, {args.processes} engines behind one agent address, "
        f"{args.seconds:g} s of audio each; ended {sorted(statuses)}, SIPp exit code {sipp_code}"
    )
    print(
        "frames lost in the bridge (RTP frames handed over vs sent on the WebSocket): "
        f"{sum(m['frames_lost'] for m in media)} of {sum(m['frames_in'] for m in media)}"
    )
    print(
        f"bot frames that never came back (bot -> RTP -> echo -> bot): "
        f"{bot.sent - bot.returned} of {bot.sent}"
    )
    lost = sum(r.get("packets_lost", 0) for r in rtp)
    received = sum(r.get("packets_received", 0) for r in rtp)
    discarded = sum(r.get("packets_discarded", 0) for r in rtp)
    print(f"RTP packets lost / discarded (PJSIP's count): {lost} / {discarded} of {received}")
    jb_discarded = sum(r.get("jitter_buffer_discarded", 0) for r in rtp)
    jb_lost = sum(r.get("jitter_buffer_lost", 0) for r in rtp)
    print(f"frames PJSIP's jitter buffer discarded / found missing: {jb_discarded} / {jb_lost}")
    played = sum(m["frames_played"] for m in media)
    from_bot = sum(m["frames_from_bot"] for m in media)
    print(f"bot frames played to the callee: {played} of {from_bot}")
    p50s = [m["send_ms_p50"] for m in media]
    p99s = [m["send_ms_p99"] for m in media]
    print(
        "added latency per frame, PJSIP hands it over -> WebSocket send done (ms): "
        f"p50 {statistics.median(p50s):.2f} (median of calls), "
        f"p99 {statistics.median(p99s):.2f} (median of calls), worst call's p99 {max(p99s):.2f}"
    )
    jb = [r["jitter_buffer_ms_avg"] for r in rtp if "jitter_buffer_ms_avg" in r]
    jb_max = [r["jitter_buffer_ms_max"] for r in rtp if "jitter_buffer_ms_max" in r]
    if jb:
        print(
            "PJSIP's jitter buffer before that (ms): "
            f"avg {statistics.mean(jb):.1f}, max {max(jb_max)}"
        )
    trips = [t * 1000 for t in bot.round_trips]
    print(
        "round trip bot -> jitter buffer -> RTP -> SIPp echo -> RTP -> bot (ms): "
        f"p50 {pct(trips, 0.5):.1f}  p99 {pct(trips, 0.99):.1f}"
    )
    underruns = sum(m["underruns"] for m in media)
    print(
        "times the bots' audio ran dry at playout (each call's end of speech, or late audio): "
        f"{underruns}"
    )
    print(
        f"CPU: {cpu_used / window * 100:.1f}% of one core for {args.calls} calls "
        f"= {cpu_used / window / args.calls * 100:.2f}% per call (supervisor + engines)"
    )
    print(
        "memory per engine (RSS MB, idle -> peak): "
        + ", ".join(f"{idle_rss[pid]:.1f} -> {peak_rss[pid]:.1f}" for pid in engines)
    )
    print(
        "memory per engine (PSS MB at peak, shared pages split): "
        + ", ".join(f"{peak_pss[pid]:.1f}" for pid in engines)
        + f"; supervisor {supervisor_pss:.1f}"
    )


if __name__ == "__main__":
    main()

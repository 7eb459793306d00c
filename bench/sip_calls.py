"""Figures for BYO SIP trunk calls on loopback: API latency, set-up time, agent memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/burki_sip_bench \
        .venv/bin/python bench/sip_calls.py [--calls 40]

The database is migrated and filled with the demo data (use a scratch one). A real agent
process and SIPp (answering, then hanging up after a second) carry the calls.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["SIP_AGENT_SECRET"] = "sip-bench-secret"
os.environ["SIP_AGENTS"] = "127.0.0.1:25570"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from calls.models import Call  # noqa: E402

SIPP_PORT = 25560


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_final(call_id: str, timeout: float = 20.0) -> Call:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        call = Call.objects.get(pk=call_id)
        if call.is_final:
            return call
        time.sleep(0.01)
    raise SystemExit(f"call {call_id} did not finish")


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    out = io.StringIO()
    call_command("seed_demo", "--json", "--sip-gateway", f"127.0.0.1:{SIPP_PORT}", stdout=out)
    demo = json.loads(out.getvalue())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {demo['api_key']}")

    agent = subprocess.Popen(  # noqa: S603
        [
            *(sys.executable, "manage.py", "sip_agent", "--control", "127.0.0.1:25570"),
            *("--sip", "127.0.0.1:25580", "--rtp-port", "25600"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sipp = subprocess.Popen(  # noqa: S603
        [
            *("sipp", "-sf", str(ROOT / "tests/sipp/uas_answer_then_bye.xml"), "-i", "127.0.0.1"),
            *("-p", str(SIPP_PORT), "-cp", "25760", "-mp", "25860", "-m", str(args.calls)),
            *("-nostdin", "-rtp_echo"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    idle_rss = rss_kb(agent.pid)
    api_ms: list[float] = []
    answer_ms: list[float] = []
    peak_rss = idle_rss
    try:
        for _ in range(args.calls):
            started = time.perf_counter()
            response = client.post(
                "/calls/initiate",
                {"from_phone_number": demo["sip_phone_number"], "to_phone_number": "+15559876543"},
                format="json",
            )
            api_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content
            call = wait_final(response.json()["call_id"])
            assert call.status == "completed", (call.status, call.end_reason)
            assert call.answered_at and call.created_at
            answer_ms.append((call.answered_at - call.created_at).total_seconds() * 1000)
            peak_rss = max(peak_rss, rss_kb(agent.pid))
        sipp_code = sipp.wait(timeout=30)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        if sipp.poll() is None:
            sipp.kill()

    print(f"calls: {args.calls}, all completed; SIPp exit code {sipp_code}")
    print(
        "POST /calls/initiate (hold, row, agent dials, INVITE sent) ms: "
        f"p50 {statistics.median(api_ms):.1f}  p95 {pct(api_ms, 0.95):.1f}  max {max(api_ms):.1f}"
    )
    print(
        "created -> answered recorded (incl. 180, 200, ACK, DB write) ms: "
        f"p50 {statistics.median(answer_ms):.1f}  p95 {pct(answer_ms, 0.95):.1f}"
    )
    print(f"agent RSS: idle {idle_rss / 1024:.1f} MB, peak {peak_rss / 1024:.1f} MB")


if __name__ == "__main__":
    main()

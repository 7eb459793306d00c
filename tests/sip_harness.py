"""A real SIP agent process and real SIPp peers on 127.0.0.1, every port pinned (25060-25999)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "sipp"
SECRET = "sip-agent-test-secret"
SIPP = shutil.which("sipp") or "sipp"  # Debian package sip-tester; .ci/run installs it

AGENT_CONTROL_PORT = 25070
AGENT_SIP_PORT = 25080
AGENT_RTP_PORT = 25100
SIPP_PORTS = (25160, 25170)  # SIP; its control port is +200 and its media port +300
MEDIA_BOT_PORT = 25940
# Where calls' audio goes when a test has no bot: nothing listens there, and the agent keeps the
# call up while it retries (SIP_MEDIA_RECONNECT_SECONDS), as a SIP-only test needs.
NO_MEDIA_STREAM = "ws://127.0.0.1:25941/media-stream"


def test_database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


class AgentProcess:
    """`manage.py sip_agent` in its own process, on the test database."""

    def __init__(
        self,
        log_path: Path,
        control_port: int = AGENT_CONTROL_PORT,
        *,
        media_reconnect_seconds: float = 3600,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self.control_port = control_port
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            "SIP_AGENT_SECRET": SECRET,
            "CONN_MAX_AGE": "0",
            "SIP_AGENT_HEARTBEAT_SECONDS": "0.2",
            "SIP_MEDIA_RECONNECT_SECONDS": str(media_reconnect_seconds),
        }
        offset = control_port - AGENT_CONTROL_PORT
        self.log = log_path.open("w")
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "sip_agent",
                "--control",
                f"127.0.0.1:{control_port}",
                "--sip",
                f"127.0.0.1:{AGENT_SIP_PORT + offset}",
                "--rtp-port",
                str(AGENT_RTP_PORT + offset * 40),
                "--trunk-response-timeout",
                "1.5",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(control_port)

    def stop(self) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self.log.close()

    def kill(self) -> None:
        """SIGKILL: the process ends without a word, as on an OOM kill or a lost machine."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


@dataclass
class SippVerdict:
    exit_code: int
    errors: str
    messages: str


class Sipp:
    """SIPp as the far end (UAS) of our calls: started before the dial, judged after."""

    def __init__(
        self,
        tmp_path: Path,
        scenario: str,
        *,
        port: int = SIPP_PORTS[0],
        calls: int = 1,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        name = f"{Path(scenario).stem}-{port}"
        self.error_file = tmp_path / f"{name}-errors.log"
        self.message_file = tmp_path / f"{name}-messages.log"
        self.process = subprocess.Popen(  # noqa: S603
            [
                SIPP,
                "-sf",
                str(SCENARIOS / scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
                "-cp",
                str(port + 200),
                "-mp",
                str(port + 300),
                "-m",
                str(calls),
                "-timeout",
                "30s",
                "-timeout_error",
                "-nostdin",
                "-trace_err",
                "-error_file",
                str(self.error_file),
                "-trace_msg",
                "-message_file",
                str(self.message_file),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # SIPp listens ~40 ms after start; leave it room on a busy machine

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.port}"

    def verdict(self, timeout: float = 40.0) -> SippVerdict:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        return SippVerdict(code, read(self.error_file), read(self.message_file))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def sent_invites(messages: str) -> list[str]:
    """The INVITE requests SIPp received, as text."""
    blocks = messages.split("----------------------------------------------- ")
    return [
        block[block.index("\nINVITE sip:") + 1 :]
        for block in blocks
        if "message received" in block and "\nINVITE sip:" in block
    ]

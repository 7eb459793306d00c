"""Production refuses to start without its secrets; the demo default needs none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG")
    }
    clean["DJANGO_SETTINGS_MODULE"] = "burki.settings"
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_a_secret_key_stops_with_a_clear_message() -> None:
    result = start(FIELD_ENCRYPTION_KEYS="0" * 43 + "=")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_without_encryption_keys_stops_with_a_clear_message() -> None:
    result = start(SECRET_KEY="s" * 50)

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS is not set" in result.stderr


def test_debug_starts_with_nothing_set() -> None:
    result = start(DEBUG="true")

    assert (result.returncode, result.stdout.strip()) == (0, "started")


def test_the_benchmarks_twilio_stand_in_must_be_on_this_machine() -> None:
    result = start(DEBUG="true", TWILIO_API_BASE_URL="http://twilio-stand-in.example:8080")

    assert result.returncode != 0
    assert "TWILIO_API_BASE_URL may only point at this machine" in result.stderr
    assert start(DEBUG="true", TWILIO_API_BASE_URL="http://127.0.0.1:9").returncode == 0

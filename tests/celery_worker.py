"""A real Celery worker process for the tests that must not run eagerly: it takes tasks from
Redis and writes to the test database, as a deployed worker would.

Such tests use `django_db(transaction=True)`, so what they write is committed and the worker
sees it. Each worker gets a queue of its own on a Redis database the rest of the suite leaves
alone, so two runs cannot take each other's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection
from kombu import pools

from burki.celery import app

BROKER_URL = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self, log_path: Path, queue: str, process: subprocess.Popen[bytes]) -> None:
        self.log_path = log_path
        self.queue = queue
        # The leader of its own process group: the worker and its embedded scheduler.
        self.process = process

    def kill(self) -> None:
        """SIGKILL to the worker and its scheduler, as an OOM kill or a lost machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def celery_worker(tmp_path: Path, *, beat: bool = False, **env: str) -> Iterator[Worker]:
    """Start `celery -A burki worker` (with `--beat` if asked) on the test database and point
    this process's task sending at it; stop it afterwards. `env` adds settings."""
    queue = f"burki-test-{uuid.uuid4().hex[:12]}"
    database = connection.settings_dict
    worker_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "celerybeat-schedule"),
        **env,
    }
    log_path = tmp_path / f"{queue}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "burki",
        "worker",
        "--pool=solo",
        "--loglevel=INFO",
        "--queues",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *(["--beat"] if beat else []),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(log_path, queue, process)
    saved = {key: app.conf[key] for key in ("broker_url", "task_default_queue")}
    forget_connections()
    app.conf.update(broker_url=BROKER_URL, task_default_queue=queue)
    try:
        wait_for(lambda: "ready." in worker.log or process.poll() is not None, timeout=30)
        assert process.poll() is None, f"the worker did not start:\n{worker.log}"
        yield worker
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        app.conf.update(saved)
        forget_connections()


def forget_connections() -> None:
    """Drop every broker connection this process holds, so the next task sent connects afresh
    with the settings then in force (Celery keeps its pools for the life of the process)."""
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def wait_for(condition: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy (returning it) or `timeout` seconds pass (returning
    the last falsy answer: the caller's assertion says what was expected)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)

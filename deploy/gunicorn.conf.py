"""gunicorn's settings for the web tier: `gunicorn -c deploy/gunicorn.conf.py burki.wsgi`.

Threads, not processes, carry the requests that wait: placing a call waits a provider's answer
(hundreds of milliseconds), and a waiting thread costs no CPU, while a sync worker would be held
whole. A process needs more threads than the requests it may have in flight: its connections
are its own once accepted, and a request that finds every thread waiting on a provider waits
too. The processes share the CPU (two per core here); each pools DATABASE_POOL_MAX_SIZE
PostgreSQL connections for its threads, given back while a provider answers, and works on
WEB_INITIATIONS_AT_ONCE initiations at a time, so the CPU's queue stays short enough for a cheap
request to pass (both set in deploy/systemd/burki-web.service). The figures behind
these numbers are in bench/RESULTS.md ("Serving"). Each value can be set from the environment,
so a unit file or `bench/run` changes one without editing this file.

nginx sits in front (deploy/nginx/burki.conf): it buffers whole requests and responses, so a
slow client holds an nginx connection, never one of these threads.
"""

import gc
import itertools
import os
import time

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Longer than nginx keeps an idle upstream connection (keepalive_timeout 60s there): the proxy,
# not gunicorn, closes an idle connection, so nginx never sends a request on one being closed.
keepalive = 75
# The worker's heartbeat (its main loop, not a request): a request may take longer.
timeout = 30
# On SIGTERM, what is in flight may finish: a provider's answer takes PROVIDER_TIMEOUT_SECONDS.
graceful_timeout = 30
backlog = 2048
# Only nginx on this machine may speak for the client (X-Forwarded-*).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # nginx keeps the access log
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Python's full garbage collection stops every thread of a process while it walks every object
# it tracks: about 170 ms (p50) for a worker's 250,000 objects on this machine, long enough to
# be the tail of every request in flight. Most of those objects are the code and settings that
# live as long as the process, so each worker freezes them (`gc.freeze`: never walked again)
# once it has loaded the application, and once more after its first WARM_REQUESTS requests,
# by when what loads on first use (a provider's SDK) has loaded: a full collection then takes
# about 13 ms (p50). Figures in bench/RESULTS.md ("A full collection").
GC_FREEZE = os.environ.get("GUNICORN_GC_FREEZE", "1") != "0"
WARM_REQUESTS = 500
_served = itertools.count(1)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    if os.environ.get("GUNICORN_GC_PAUSE_LOG"):
        _log_full_collections(os.environ["GUNICORN_GC_PAUSE_LOG"])
    if GC_FREEZE:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 (imports every view, serializer and parser)
        gc.collect()
        gc.freeze()


def post_request(worker, req, environ, resp):  # type: ignore[no-untyped-def]
    if GC_FREEZE and next(_served) == WARM_REQUESTS:
        gc.collect()
        gc.freeze()


def _log_full_collections(path: str) -> None:
    """Append each full collection's pause to `path` (milliseconds), for bench/run."""
    started: list[float] = []

    def timing(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            with open(path, "a") as log:
                log.write(f"{(time.perf_counter() - started[0]) * 1000:.1f}\n")

    gc.callbacks.append(timing)

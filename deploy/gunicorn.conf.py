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

import os

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

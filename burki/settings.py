"""Settings, all from the environment (django-environ); a `.env` beside manage.py is read too."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or DEBUG=true for local use)."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto on every request (as
# deploy/nginx/burki.conf does), so Django knows a request came over HTTPS. Never without such a
# proxy: a client could then claim HTTPS itself.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# What providers call back: every webhook URL we hand a provider starts with this, and
# signatures are checked against it (never against the Host header a proxy rewrote).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Where an answered call's audio goes: the assistant's media stream (a WebSocket).
MEDIA_STREAM_URL = env.str(
    "MEDIA_STREAM_URL",
    default=PUBLIC_BASE_URL.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    + "/media-stream",
)

# Money: integer minor units. The rate can be overridden per organization.
BILLING_CURRENCY = env.str("BILLING_CURRENCY", default="USD")
CALL_RATE_CENTS_PER_MINUTE = env.int("CALL_RATE_CENTS_PER_MINUTE", default=10)
# How long a provider may ring the callee before giving up.
CALL_RING_TIMEOUT_SECONDS = env.int("CALL_RING_TIMEOUT_SECONDS", default=30)
# How long we wait for a provider's REST API when placing a call.
PROVIDER_TIMEOUT_SECONDS = env.float("PROVIDER_TIMEOUT_SECONDS", default=10.0)
# Initiations a web process works on at once, not counting those waiting on their provider
# (burki/admission.py); 0: as many as it has threads.
WEB_INITIATIONS_AT_ONCE = env.int("WEB_INITIATIONS_AT_ONCE", default=0)
# Connections kept open to each provider's API per process: at least the threads of a web
# process (deploy/gunicorn.conf.py), which may all be placing calls at once.
PROVIDER_HTTP_POOL_SIZE = env.int("PROVIDER_HTTP_POOL_SIZE", default=32)
# Benchmarks only: point the Twilio SDK at a local fake of its REST API (empty: the real one).
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
# Every Twilio request carries the account's credentials: they may go to Twilio or to loopback.
if TWILIO_API_BASE_URL and urlsplit(TWILIO_API_BASE_URL).hostname not in LOOPBACK_HOSTS:
    raise ImproperlyConfigured("TWILIO_API_BASE_URL may only point at this machine (loopback).")

# A call through a provider account whose calls a second are taken waits this long at most for
# a slot (burki/pacing.py), then is refused (429).
CALL_PACING_MAX_WAIT_SECONDS = env.float("CALL_PACING_MAX_WAIT_SECONDS", default=2.0)

# Safety limits. A call over an organization's cap of simultaneous calls is refused (429);
# Organization.max_concurrent_calls overrides the default.
MAX_CONCURRENT_CALLS = env.int("MAX_CONCURRENT_CALLS", default=10)
# Idempotency-Key on POST /calls/initiate: how long a key and its answer are kept, and after how
# long a request that claimed a key and never finished (a killed worker) is treated as dead.
IDEMPOTENCY_KEY_TTL_SECONDS = env.int("IDEMPOTENCY_KEY_TTL_SECONDS", default=24 * 60 * 60)
IDEMPOTENCY_STALE_SECONDS = env.int("IDEMPOTENCY_STALE_SECONDS", default=120)
# `reconcile_calls` leaves a queued call alone for this long: its request may still be running.
CALL_RECONCILE_GRACE_SECONDS = env.int("CALL_RECONCILE_GRACE_SECONDS", default=120)

# The background engine (Celery; burki/celery.py). Redis in deployments
# (`redis://127.0.0.1:6379/0`); the default needs nothing installed: a broker kept in files under
# `.broker/` beside manage.py, for the demo and one machine.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = BASE_DIR / ".broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TIMEZONE = "UTC"
CELERY_TASK_IGNORE_RESULT = True  # every task's outcome is in the database
# A task is acknowledged when it has run, not when it is taken: a worker killed half-way leaves
# it to be delivered again, so every task is written to be safe to run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / ".celerybeat-schedule")
)
# The sandbox plays its calls' lifecycles this many times faster than real time (tests, demos).
SANDBOX_TIME_SCALE = env.float("SANDBOX_TIME_SCALE", default=1.0)
if SANDBOX_TIME_SCALE <= 0:
    raise ImproperlyConfigured("SANDBOX_TIME_SCALE must be a positive number.")
# How often the periodic work runs (see calls/tasks.py).
CALL_RECONCILE_INTERVAL_SECONDS = env.int("CALL_RECONCILE_INTERVAL_SECONDS", default=60)
# The sweep of placed calls whose end we never heard of (calls.services.calls_sweep): how
# often it runs, how long past a call's last possible moment it waits, and how long after that
# it settles a call the provider still cannot tell about by its rule.
CALL_SWEEP_INTERVAL_SECONDS = env.int("CALL_SWEEP_INTERVAL_SECONDS", default=60)
CALL_SWEEP_GRACE_SECONDS = env.int("CALL_SWEEP_GRACE_SECONDS", default=120)
CALL_SWEEP_GIVE_UP_SECONDS = env.int("CALL_SWEEP_GIVE_UP_SECONDS", default=3600)
# Customer webhooks (webhooks.services): how often the relay hands out due deliveries, the
# seconds between attempts (then we give up), and what a delivery may cost us.
WEBHOOK_RELAY_INTERVAL_SECONDS = env.float("WEBHOOK_RELAY_INTERVAL_SECONDS", default=1.0)
WEBHOOK_RETRY_SCHEDULE = env.list(
    "WEBHOOK_RETRY_SCHEDULE", cast=int, default=[5, 300, 1800, 7200, 18000, 36000, 36000]
)
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env.float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=15.0)
WEBHOOK_MAX_RESPONSE_BYTES = env.int("WEBHOOK_MAX_RESPONSE_BYTES", default=65536)
WEBHOOK_EXCERPT_BYTES = 1000
# A worker holds a delivery it sends this long; one that died lets it go then.
WEBHOOK_LEASE_SECONDS = env.int("WEBHOOK_LEASE_SECONDS", default=60)
# For self-hosting on a private network (and for tests): deliver to private addresses too.
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=False)
# An endpoint whose every delivery has failed this long is disabled.
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS", default=5 * 86400)
# After a rotation, how long deliveries are signed with the old secret too.
WEBHOOK_SECRET_OVERLAP_SECONDS = env.int("WEBHOOK_SECRET_OVERLAP_SECONDS", default=86400)
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)
# Campaigns (campaigns.services): how often the scheduler's tick runs (outcomes, retries,
# recovery, dialers), how long one dialer task dials before the next tick's replaces it, how
# many dialers a campaign may have, the provider answer time they are sized for, how long a
# dialer waits for a slot of the pace, and when a claim of a worker that died is looked at again.
CAMPAIGN_TICK_SECONDS = env.float("CAMPAIGN_TICK_SECONDS", default=1.0)
CAMPAIGN_DIALER_SECONDS = env.float("CAMPAIGN_DIALER_SECONDS", default=10.0)
CAMPAIGN_MAX_DIALERS = env.int("CAMPAIGN_MAX_DIALERS", default=4)
CAMPAIGN_DIAL_SECONDS = env.float("CAMPAIGN_DIAL_SECONDS", default=0.1)
CAMPAIGN_PACE_MAX_WAIT_SECONDS = env.float("CAMPAIGN_PACE_MAX_WAIT_SECONDS", default=2.0)
CAMPAIGN_DIAL_STALE_SECONDS = env.int(
    "CAMPAIGN_DIAL_STALE_SECONDS", default=int(PROVIDER_TIMEOUT_SECONDS) + 60
)
CELERY_BEAT_SCHEDULE = {
    "campaigns-tick": {
        "task": "campaigns.tasks.campaigns_tick",
        "schedule": CAMPAIGN_TICK_SECONDS,
        "options": {"expires": max(CAMPAIGN_TICK_SECONDS, 5)},
    },
    "sweep-overdue-calls": {
        "task": "calls.tasks.calls_sweep",
        "schedule": CALL_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": CALL_SWEEP_INTERVAL_SECONDS},
    },
    "relay-webhooks": {
        "task": "webhooks.tasks.webhooks_relay",
        "schedule": WEBHOOK_RELAY_INTERVAL_SECONDS,
        "options": {"expires": max(WEBHOOK_RELAY_INTERVAL_SECONDS, 5)},
    },
    "purge-webhook-events": {
        "task": "webhooks.tasks.webhooks_purge",
        "schedule": 3600,
        "options": {"expires": 3600},
    },
    "reconcile-queued-calls": {
        "task": "calls.tasks.calls_reconcile",
        "schedule": CALL_RECONCILE_INTERVAL_SECONDS,
        # A run that could not start in time is replaced by the next one, not stacked up.
        "options": {"expires": CALL_RECONCILE_INTERVAL_SECONDS},
    },
}

# Throttling per API key; counters live in the cache, so point CACHE_URL (or REDIS_URL) at Redis
# to make the limits hold across processes and machines. Nothing else uses the cache, and the
# throttles let requests through while it is down (burki/throttling.py).
_cache_url = env.str("CACHE_URL", default="") or env.str("REDIS_URL", default="")
CACHES: dict[str, dict[str, Any]] = {
    "default": env.cache_url_config(_cache_url)
    if _cache_url
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # A Redis that does not answer must not hold the request (redis-py waits forever by default).
    _cache_timeout = env.float("CACHE_TIMEOUT_SECONDS", default=0.5)
    _cache_options = CACHES["default"].setdefault("OPTIONS", {})
    _cache_options.setdefault("socket_connect_timeout", _cache_timeout)
    _cache_options.setdefault("socket_timeout", _cache_timeout)

# BYO SIP trunks: `manage.py sip_agent` processes own the SIP stack (telephony.sip). Web workers
# reach them on these loopback control addresses (one per agent; each of its engine processes
# carries at most 4 calls) and prove themselves with SIP_AGENT_SECRET (derived from SECRET_KEY
# when unset).
SIP_AGENTS = env.list("SIP_AGENTS", default=["127.0.0.1:5070"])
SIP_AGENT_SECRET = env.str("SIP_AGENT_SECRET", default="")
SIP_AGENT_TIMEOUT_SECONDS = env.float("SIP_AGENT_TIMEOUT_SECONDS", default=5.0)
# Each agent stamps the calls it carries this often; a call not stamped for
# SIP_AGENT_SILENT_SECONDS has lost its agent (killed, its machine gone) and is settled by the next
# sweep as ended when it was last heard.
SIP_AGENT_HEARTBEAT_SECONDS = env.float("SIP_AGENT_HEARTBEAT_SECONDS", default=5.0)
SIP_AGENT_SILENT_SECONDS = env.int("SIP_AGENT_SILENT_SECONDS", default=30)
# An answered SIP call's audio is bridged to MEDIA_STREAM_URL. When that stream cannot be opened
# or drops, the agent keeps trying for this long before it hangs the call up (0: at once).
SIP_MEDIA_RECONNECT_SECONDS = env.float("SIP_MEDIA_RECONNECT_SECONDS", default=0.0)

# Secrets at rest (provider tokens, private keys, SIP passwords) are Fernet-encrypted.
# The first key encrypts; every key decrypts, so a new key is rotated in by putting it first.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
if not FIELD_ENCRYPTION_KEYS and not DEBUG:
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEYS is not set. Generate one with `python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
    )

INSTALLED_APPS = [
    "burki.admin_site.BurkiAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "phonenumber_field",
    "burki",
    "assistants",
    "billing",
    "telephony",
    "calls",
    "webhooks",
    "campaigns",
]

MIDDLEWARE = [
    "burki.admission.InitiationAdmissionMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "burki.exceptions.ErrorsAsInProductionMiddleware",
]

ROOT_URLCONF = "burki.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "burki.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL connections per web process, in a pool (psycopg_pool through Django) that its
# threads share: a thread takes one for its queries and gives it back while it waits on a
# provider (burki.db.connection_release), so a pool much smaller than the threads serves them.
# 0: no pool, one persistent connection per thread (CONN_MAX_AGE).
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
if DATABASE_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them open
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        # A request that cannot have a connection in this time fails rather than queue on.
        "timeout": env.float("DATABASE_POOL_TIMEOUT_SECONDS", default=10.0),
        "max_idle": 300,
        "name": "burki",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

PHONENUMBER_DB_FORMAT = "E164"
PHONENUMBER_DEFAULT_FORMAT = "E164"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["burki.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["burki.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "burki.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["burki.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env.str("API_THROTTLE_RATE", default="600/min"),
        "initiate": env.str("INITIATE_THROTTLE_RATE", default="120/min"),
    },
}

# The OpenAPI schema (/api/schema/) and its Swagger UI (/api/docs/), served with the UI's own
# files (drf-spectacular-sidecar) so the docs page works without reaching a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Burki outbound calls API",
    "DESCRIPTION": (
        "Place outbound calls from your AI assistants and follow them. Every request carries "
        '`Authorization: Bearer <api key>`; every error is `{"detail": "<one sentence>"}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CallStatus": "telephony.states.CallState",
        "LedgerEntryKind": "billing.models.LedgerEntry.Kind",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # The SDKs log whole requests at DEBUG, credentials included: keep them quieter.
    "loggers": {
        "twilio": {"level": "WARNING"},
        "telnyx": {"level": "WARNING"},
        "vonage": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

"""Settings for the test suite: the real settings, with test-only keys and fast hashing.

The suite runs on PostgreSQL only (row locks, concurrency, the live fuzz): DATABASE_URL, by
default the local server, as in bin/test. SQLite is refused rather than half-tested.
"""

import os

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "0" * 43 + "=")
os.environ.setdefault("PUBLIC_BASE_URL", "https://burki.test")
os.environ.setdefault("MEDIA_STREAM_URL", "wss://media.burki.test/stream")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/burki")

from burki.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "burki.test"]

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":  # noqa: F405
    raise ImproperlyConfigured(
        "The test suite runs on PostgreSQL: set DATABASE_URL to a postgres:// URL."
    )

# Tasks are sent as in production, but to a broker in this process's memory that no worker
# reads: a test that wants a task's effect runs its service, or starts a real worker on Redis
# (tests/celery_worker.py). (Celery reads CELERY_BROKER_URL from the environment before this.)
CELERY_BROKER_URL = "memory://"

"""Settings for the test suite: the real settings, with test-only keys and fast hashing.

The database comes from DATABASE_URL like everywhere else (bin/test points it at PostgreSQL).
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "0" * 43 + "=")
os.environ.setdefault("PUBLIC_BASE_URL", "https://burki.test")
os.environ.setdefault("MEDIA_STREAM_URL", "wss://media.burki.test/stream")

from burki.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "burki.test"]

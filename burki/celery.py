"""The background engine: Celery, configured from Django's settings (the CELERY_* names).

Start a worker with its scheduler beside it as `celery -A burki worker --beat`. Any number of
workers may run; the scheduler (`--beat`, or `celery -A burki beat` alone) must run in one place
only, and every periodic task is safe even if it runs twice at once (each claims its rows).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "burki.settings")

app = Celery("burki")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

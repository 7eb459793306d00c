#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "burki.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 (reads the settings, which check the environment)
    except ImproperlyConfigured as exc:
        # What to set, in one line, rather than a traceback through the settings module.
        sys.exit(f"manage.py: {exc}")

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

from django.apps import AppConfig


class BurkiConfig(AppConfig):
    name = "burki"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        # Registers the Bearer scheme with drf-spectacular (extensions register on import).
        from burki import schema  # noqa: F401

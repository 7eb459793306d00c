from django.apps import AppConfig


class BurkiConfig(AppConfig):
    name = "burki"
    verbose_name = "Tenancy"

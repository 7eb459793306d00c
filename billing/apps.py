from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from billing.services import balance_open
        from burki.models import Organization

        def open_balance(sender: type, instance: Organization, created: bool, **_: object) -> None:
            if created:
                balance_open(organization=instance)

        # However an organization comes to be (admin, shell, a command), its balance is there.
        post_save.connect(
            open_balance, sender=Organization, weak=False, dispatch_uid="billing.open_balance"
        )

"""Organizations made before balances came with them get theirs now (empty, as a new one)."""

from django.db import migrations


def open_missing_balances(apps, schema_editor):
    Organization = apps.get_model("burki", "Organization")
    Balance = apps.get_model("billing", "Balance")
    Balance.objects.bulk_create(
        [Balance(organization=org) for org in Organization.objects.filter(balance__isnull=True)]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_balance_figures_not_editable"),
        ("burki", "0002_organization_max_concurrent_calls"),
    ]

    operations = [migrations.RunPython(open_missing_balances, migrations.RunPython.noop)]

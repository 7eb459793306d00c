"""Drop foreign-key indexes that a composite index leading with the same column already gives.

Only the index goes: the state changes to db_index=False, the database loses the index, and the
foreign-key constraint stays as it is (Django would drop and re-add it, re-checking every row).
"""

import django.db.models.deletion
from django.db import migrations, models


def drop_index(table, column, name):
    return migrations.RunSQL(
        f'DROP INDEX IF EXISTS "{name}"',
        reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("burki", "0001_initial"),
        ("calls", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="call",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger_entries",
                        to="calls.call",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="ledger_entries",
                        to="burki.organization",
                    ),
                ),
            ],
            database_operations=[
                # ledger_one_kind_per_call (call_id, kind) WHERE call_id IS NOT NULL serves every
                # lookup by call: call_id = x implies call_id IS NOT NULL.
                drop_index(
                    "billing_ledgerentry", "call_id", "billing_ledgerentry_call_id_49f53f27"
                ),
                # ledger_org_created leads with organization_id.
                drop_index(
                    "billing_ledgerentry",
                    "organization_id",
                    "billing_ledgerentry_organization_id_edcfad3a",
                ),
            ],
        ),
    ]

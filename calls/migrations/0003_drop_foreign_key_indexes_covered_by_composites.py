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
        ("burki", "0001_initial"),
        ("calls", "0002_idempotency_key"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="call",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="calls",
                        to="burki.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="callevent",
                    name="call",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="calls.call",
                    ),
                ),
            ],
            database_operations=[
                # call_org_created and call_org_status lead with organization_id.
                drop_index("calls_call", "organization_id", "calls_call_organization_id_fa4bb21a"),
                # call_event_call_created leads with call_id.
                drop_index("calls_callevent", "call_id", "calls_callevent_call_id_511c7c00"),
            ],
        ),
    ]

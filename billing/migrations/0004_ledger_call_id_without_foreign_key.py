"""LedgerEntry.call becomes call_id, a plain UUID: billing's schema no longer depends on calls.

Every row keeps its data: the column, its type and its values stay. The database only loses the
foreign-key constraint (PostgreSQL drops it; SQLite rebuilds the table without it). The state then
swaps the foreign key for a UUIDField on the same column, and the uniqueness constraint for its
equivalent on call_id: the same index, so the database keeps it as it is.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_balance_open_holds"),
        ("calls", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="ledgerentry",
            name="call",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="ledger_entries",
                to="calls.call",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(
                    model_name="ledgerentry",
                    name="ledger_one_kind_per_call",
                ),
                migrations.RemoveField(
                    model_name="ledgerentry",
                    name="call",
                ),
                migrations.AddField(
                    model_name="ledgerentry",
                    name="call_id",
                    field=models.UUIDField(blank=True, null=True),
                ),
                migrations.AddConstraint(
                    model_name="ledgerentry",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("call_id__isnull", False)),
                        fields=("call_id", "kind"),
                        name="ledger_one_kind_per_call",
                    ),
                ),
            ],
        ),
    ]

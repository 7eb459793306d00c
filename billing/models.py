from __future__ import annotations

from django.db import models

from billing.money import format_money


class Balance(models.Model):
    """An organization's money, in integer minor units.

    `held_cents` is reserved by calls in progress; what can be spent is `balance - held`.
    Every change writes a LedgerEntry in the same transaction, so the ledger sums to both.
    """

    organization = models.OneToOneField(
        "burki.Organization", on_delete=models.CASCADE, related_name="balance"
    )
    # Derived from the ledger and written by billing.services alone: no form may edit them.
    balance_cents = models.BigIntegerField(default=0, editable=False)
    held_cents = models.BigIntegerField(default=0, editable=False)
    # Holds not yet settled: one per call that has not ended. Every live call has one, so
    # while this is under an organization's cap on simultaneous calls there is room for another.
    open_holds = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(held_cents__gte=0), name="balance_held_gte_0"
            ),
            models.CheckConstraint(
                condition=models.Q(balance_cents__gte=models.F("held_cents")),
                name="balance_covers_held",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization}: {format_money(self.balance_cents)}"

    @property
    def available_cents(self) -> int:
        return self.balance_cents - self.held_cents


class LedgerEntry(models.Model):
    """Append-only: one row per change to a Balance; nothing updates or deletes one."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        HOLD = "hold", "Hold"
        RELEASE = "release", "Release"
        CHARGE = "charge", "Charge"
        ADJUSTMENT = "adjustment", "Adjustment"

    # Indexed by ledger_org_created, which leads with it.
    organization = models.ForeignKey(
        "burki.Organization",
        on_delete=models.CASCADE,
        related_name="ledger_entries",
        db_index=False,
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Signed changes: `amount_cents` to the balance, `held_change_cents` to the held part.
    amount_cents = models.BigIntegerField(default=0)
    held_change_cents = models.BigIntegerField(default=0)
    balance_after_cents = models.BigIntegerField()
    held_after_cents = models.BigIntegerField()
    # The call this row holds, charges or releases money for. An opaque id, not a foreign key:
    # billing knows no calls. Indexed by ledger_one_kind_per_call (call_id, kind) WHERE call_id
    # IS NOT NULL, which serves every lookup by call.
    call_id = models.UUIDField(null=True, blank=True)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["organization", "-created_at"], name="ledger_org_created")]
        constraints = [
            # A call is held, charged and released at most once each.
            models.UniqueConstraint(
                fields=["call_id", "kind"],
                condition=models.Q(call_id__isnull=False),
                name="ledger_one_kind_per_call",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_kind_display()} {self.amount_cents:+d} / held {self.held_change_cents:+d}"
        )

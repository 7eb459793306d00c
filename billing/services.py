"""Money: every function here runs inside the caller's transaction or opens its own, locks the
Balance row (`select_for_update`) before reading it, and writes a LedgerEntry for every change."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.db import transaction

from billing.models import Balance, LedgerEntry
from burki.exceptions import InsufficientBalance
from burki.models import Organization

# The smallest call we place: the balance must pay for one billable minute.
MINIMUM_BILLABLE_SECONDS = 60


def cost_cents(*, seconds: int, rate_cents_per_minute: int) -> int:
    """Per-second billing, rounded up to the next minor unit."""
    return -(-seconds * rate_cents_per_minute // 60)


@dataclass(frozen=True)
class HoldQuote:
    time_limit_seconds: int
    hold_cents: int


def hold_quote(*, available_cents: int, rate_cents_per_minute: int, max_seconds: int) -> HoldQuote:
    """How long a call the available money pays for (capped), and what to hold for it."""
    affordable_seconds = available_cents * 60 // rate_cents_per_minute
    if affordable_seconds < MINIMUM_BILLABLE_SECONDS:
        raise InsufficientBalance()
    time_limit = min(affordable_seconds, max_seconds)
    return HoldQuote(
        time_limit_seconds=time_limit,
        hold_cents=cost_cents(seconds=time_limit, rate_cents_per_minute=rate_cents_per_minute),
    )


def balance_lock(*, organization_id: int) -> Balance | None:
    """The organization's Balance, locked until the transaction ends (None: never funded)."""
    return Balance.objects.select_for_update().filter(organization_id=organization_id).first()


def _write(
    balance: Balance,
    *,
    kind: str,
    amount_cents: int = 0,
    held_change_cents: int = 0,
    call_id: UUID | None = None,
    memo: str = "",
) -> LedgerEntry:
    balance.balance_cents += amount_cents
    balance.held_cents += held_change_cents
    balance.save(update_fields=["balance_cents", "held_cents", "updated_at"])
    return LedgerEntry.objects.create(
        organization_id=balance.organization_id,
        kind=kind,
        amount_cents=amount_cents,
        held_change_cents=held_change_cents,
        balance_after_cents=balance.balance_cents,
        held_after_cents=balance.held_cents,
        call_id=call_id,
        memo=memo,
    )


def balance_hold(*, balance: Balance, amount_cents: int, call_id: UUID) -> LedgerEntry:
    """Reserve money for a call; `balance` must come from `balance_lock` in this transaction."""
    if amount_cents <= 0 or amount_cents > balance.available_cents:
        raise InsufficientBalance()
    return _write(
        balance, kind=LedgerEntry.Kind.HOLD, held_change_cents=amount_cents, call_id=call_id
    )


def balance_settle(
    *, organization_id: int, call_id: UUID, held_cents: int, charge_cents: int
) -> None:
    """Charge a finished call (never more than was held) and release the rest of its hold."""
    charge = max(0, min(charge_cents, held_cents))
    with transaction.atomic():
        balance = balance_lock(organization_id=organization_id)
        if balance is None:
            raise Balance.DoesNotExist(f"organization {organization_id} has no balance")
        if charge:
            _write(
                balance,
                kind=LedgerEntry.Kind.CHARGE,
                amount_cents=-charge,
                held_change_cents=-charge,
                call_id=call_id,
            )
        if held_cents - charge:
            _write(
                balance,
                kind=LedgerEntry.Kind.RELEASE,
                held_change_cents=-(held_cents - charge),
                call_id=call_id,
            )


def balance_release(*, organization_id: int, call_id: UUID, held_cents: int) -> None:
    """Give back a whole hold (the call never happened)."""
    balance_settle(
        organization_id=organization_id, call_id=call_id, held_cents=held_cents, charge_cents=0
    )


def balance_top_up(*, organization: Organization, amount_cents: int, memo: str = "") -> Balance:
    if amount_cents <= 0:
        raise ValueError("A top-up must be a positive amount.")
    with transaction.atomic():
        Balance.objects.get_or_create(organization=organization)
        balance = balance_lock(organization_id=organization.pk)
        assert balance is not None
        _write(balance, kind=LedgerEntry.Kind.TOP_UP, amount_cents=amount_cents, memo=memo)
    return balance


def balance_adjust(*, organization: Organization, amount_cents: int, memo: str) -> Balance:
    """A signed correction by an operator; it may not take the balance below what is held."""
    if not memo:
        raise ValueError("An adjustment needs a memo saying why.")
    with transaction.atomic():
        Balance.objects.get_or_create(organization=organization)
        balance = balance_lock(organization_id=organization.pk)
        assert balance is not None
        if balance.balance_cents + amount_cents < balance.held_cents:
            raise ValueError("An adjustment may not take the balance below the held amount.")
        _write(balance, kind=LedgerEntry.Kind.ADJUSTMENT, amount_cents=amount_cents, memo=memo)
    return balance

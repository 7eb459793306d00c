"""Money: every function here runs inside the caller's transaction or opens its own, locks the
Balance row (`select_for_update`) before reading it, and writes a LedgerEntry for every change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from billing.errors import (
    AdjustmentBelowHeld,
    AdjustmentWithoutMemo,
    InsufficientBalance,
    TopUpNotPositive,
)
from billing.models import Balance, LedgerEntry
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
    try:
        return Balance.objects.select_for_update().get(organization_id=organization_id)
    except Balance.DoesNotExist:
        return None


def _entry(
    balance: Balance,
    *,
    kind: str,
    amount_cents: int = 0,
    held_change_cents: int = 0,
    call_id: UUID | None = None,
    memo: str = "",
) -> LedgerEntry:
    """Apply a change to `balance` in memory and return its (unsaved) ledger row."""
    balance.balance_cents += amount_cents
    balance.held_cents += held_change_cents
    return LedgerEntry(
        organization_id=balance.organization_id,
        kind=kind,
        amount_cents=amount_cents,
        held_change_cents=held_change_cents,
        balance_after_cents=balance.balance_cents,
        held_after_cents=balance.held_cents,
        call_id=call_id,
        memo=memo,
    )


BALANCE_FIELDS = ["balance_cents", "held_cents", "open_holds", "updated_at"]


def _write(balance: Balance, **change: Any) -> LedgerEntry:
    entry = _entry(balance, **change)
    balance.save(update_fields=BALANCE_FIELDS)
    entry.save(force_insert=True)
    return entry


def balance_hold(*, balance: Balance, amount_cents: int, call_id: UUID) -> LedgerEntry:
    """Reserve money for a call; `balance` must come from `balance_lock` in this transaction."""
    if amount_cents <= 0 or amount_cents > balance.available_cents:
        raise InsufficientBalance()
    balance.open_holds += 1
    return _write(
        balance, kind=LedgerEntry.Kind.HOLD, held_change_cents=amount_cents, call_id=call_id
    )


# Claims the hold and writes its ledger row in one statement, only if the available money covers
# it and fewer holds than the cap are open. The UPDATE takes the Balance row lock, so concurrent
# holds of one organization queue on it exactly as with select_for_update, and PostgreSQL
# re-checks the condition on the row as the previous holder left it. One statement, so one round
# trip and no Python while the lock is held; the INSERT's columns and values come from the model
# (`_hold_row`), so it writes the row the locked path would.
_HOLD_IF_COVERED = """
WITH claimed AS (
    UPDATE {balance}
    SET held_cents = held_cents + %(amount)s, open_holds = open_holds + 1, updated_at = %(now)s
    WHERE organization_id = %(organization_id)s AND balance_cents - held_cents >= %(amount)s
      AND open_holds < %(max_open_holds)s
    RETURNING organization_id, balance_cents, held_cents
)
INSERT INTO {ledger} ({columns})
SELECT {values}
FROM claimed
RETURNING id
"""

# The ledger row's columns that only the claimed Balance row knows, and what it RETURNs for each.
_FROM_CLAIMED = {
    "organization_id": "organization_id",
    "balance_after_cents": "balance_cents",
    "held_after_cents": "held_cents",
}


def _hold_row(
    *, organization_id: int, amount_cents: int, call_id: UUID
) -> tuple[str, str, dict[str, Any]]:
    """The hold's ledger row for `_HOLD_IF_COVERED`: its column list, its values and their
    parameters.

    The row is the one the locked path writes (`_entry`), turned into SQL field by field the way
    the ORM saves it, so the two paths cannot drift apart: a new column with a default gets it
    here too, and one that needs a value nothing here gives is NULL and fails loudly. The
    organization and the balance's figures after the hold come from the UPDATE's RETURNING (the
    figures are only known under the lock): the Balance handed to `_entry` is a stand-in.
    """
    entry = _entry(
        Balance(organization_id=organization_id),
        kind=LedgerEntry.Kind.HOLD,
        held_change_cents=amount_cents,
        call_id=call_id,
    )
    columns: list[str] = []
    values: list[str] = []
    params: dict[str, Any] = {}
    for field in LedgerEntry._meta.concrete_fields:
        column = field.column
        if field.primary_key or column is None:  # a concrete field always has a column
            continue
        columns.append(connection.ops.quote_name(column))
        if column in _FROM_CLAIMED:
            values.append(_FROM_CLAIMED[column])
        else:
            name = f"entry_{field.attname}"
            params[name] = field.get_db_prep_save(field.pre_save(entry, add=True), connection)
            values.append(f"%({name})s")
    return ", ".join(columns), ", ".join(values), params


def balance_hold_call(
    *,
    organization_id: int,
    call_id: UUID,
    rate_cents_per_minute: int,
    max_seconds: int,
    max_open_holds: int,
    check_room: Callable[[], None],
) -> HoldQuote:
    """Hold money for a call of at most `max_seconds`: all of it when the available balance
    covers it, else as long a call as the available balance pays for (`hold_quote`).

    `max_open_holds` is the organization's cap on simultaneous calls. Fewer open holds than that
    means room, in the same statement as the hold. At or over it, the hold may still fit: a hold
    outlives its call when the call's final event never comes. So `check_room` is asked, under
    the Balance row lock, to decide exactly (and to raise when there is no room).

    Run it inside the caller's transaction, as its last statement before the commit where it
    can be: the Balance row stays locked from here until the commit.
    """
    full = HoldQuote(
        time_limit_seconds=max_seconds,
        hold_cents=cost_cents(seconds=max_seconds, rate_cents_per_minute=rate_cents_per_minute),
    )
    # The common case, a funded organization: one statement, and no Python runs under the lock.
    if connection.vendor == "postgresql" and full.hold_cents > 0:
        columns, values, row = _hold_row(
            organization_id=organization_id, amount_cents=full.hold_cents, call_id=call_id
        )
        sql = _HOLD_IF_COVERED.format(
            balance=connection.ops.quote_name(Balance._meta.db_table),
            ledger=connection.ops.quote_name(LedgerEntry._meta.db_table),
            columns=columns,
            values=values,
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                {
                    **row,
                    "amount": full.hold_cents,
                    "now": timezone.now(),
                    "organization_id": organization_id,
                    "max_open_holds": max_open_holds,
                },
            )
            if cursor.fetchone() is not None:
                return full
    balance = balance_lock(organization_id=organization_id)
    if balance is None:
        raise InsufficientBalance()
    if balance.open_holds >= max_open_holds:
        check_room()
    quote = hold_quote(
        available_cents=balance.available_cents,
        rate_cents_per_minute=rate_cents_per_minute,
        max_seconds=max_seconds,
    )
    balance_hold(balance=balance, amount_cents=quote.hold_cents, call_id=call_id)
    return quote


def balance_settle(
    *, organization_id: int, call_id: UUID, held_cents: int, charge_cents: int
) -> None:
    """Charge a finished call (never more than was held) and release the rest of its hold."""
    charge = max(0, min(charge_cents, held_cents))
    # No savepoint: callers run this inside their own transaction and let any error end it, so a
    # savepoint would only add two round trips to every finished call.
    with transaction.atomic(savepoint=False):
        balance = balance_lock(organization_id=organization_id)
        if balance is None:
            raise Balance.DoesNotExist(f"organization {organization_id} has no balance")
        entries = []
        if charge:
            entries.append(
                _entry(
                    balance,
                    kind=LedgerEntry.Kind.CHARGE,
                    amount_cents=-charge,
                    held_change_cents=-charge,
                    call_id=call_id,
                )
            )
        if held_cents - charge:
            entries.append(
                _entry(
                    balance,
                    kind=LedgerEntry.Kind.RELEASE,
                    held_change_cents=-(held_cents - charge),
                    call_id=call_id,
                )
            )
        # The call's hold is closed. (Never below zero: a settle must not fail over a count.)
        balance.open_holds = max(balance.open_holds - 1, 0)
        # One write of the balance and one insert for both rows (charge first, then release).
        balance.save(update_fields=BALANCE_FIELDS)
        if entries:
            LedgerEntry.objects.bulk_create(entries)


def balance_release(*, organization_id: int, call_id: UUID, held_cents: int) -> None:
    """Give back a whole hold (the call never happened)."""
    balance_settle(
        organization_id=organization_id, call_id=call_id, held_cents=held_cents, charge_cents=0
    )


def balance_open(*, organization: Organization) -> Balance:
    """The organization's balance, created empty if it has none yet."""
    return Balance.objects.get_or_create(organization=organization)[0]


def balance_top_up(*, organization: Organization, amount_cents: int, memo: str = "") -> Balance:
    if amount_cents <= 0:
        raise TopUpNotPositive()
    with transaction.atomic():
        Balance.objects.get_or_create(organization=organization)
        balance = balance_lock(organization_id=organization.pk)
        assert balance is not None
        _write(balance, kind=LedgerEntry.Kind.TOP_UP, amount_cents=amount_cents, memo=memo)
    return balance


def balance_adjust(*, organization: Organization, amount_cents: int, memo: str) -> Balance:
    """A signed correction by an operator; it may not take the balance below what is held."""
    if not memo:
        raise AdjustmentWithoutMemo()
    with transaction.atomic():
        Balance.objects.get_or_create(organization=organization)
        balance = balance_lock(organization_id=organization.pk)
        assert balance is not None
        if balance.balance_cents + amount_cents < balance.held_cents:
            raise AdjustmentBelowHeld()
        _write(balance, kind=LedgerEntry.Kind.ADJUSTMENT, amount_cents=amount_cents, memo=memo)
    return balance

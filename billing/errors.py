"""Money's rules, as domain errors (the API maps them in burki.exceptions)."""

from __future__ import annotations

from burki.errors import DomainError


class BillingError(DomainError):
    """A change to a balance that the rules of money do not allow."""


class InsufficientBalance(BillingError):
    code = "insufficient_balance"
    default_message = "Insufficient balance. Please add funds to continue making calls."


class TopUpNotPositive(BillingError):
    code = "top_up_not_positive"
    default_message = "A top-up must be a positive amount."


class AdjustmentWithoutMemo(BillingError):
    code = "adjustment_without_memo"
    default_message = "An adjustment needs a memo saying why."


class AdjustmentBelowHeld(BillingError):
    code = "adjustment_below_held"
    default_message = "An adjustment may not take the balance below the held amount."

"""Money as an operator reads it: `$49.21`. Stored and computed as integer minor units."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision
from django.conf import settings

LOCALE = "en_US"


def minor_units() -> int:
    """How many minor units make one of the currency (100 cents a dollar; 1 for the yen)."""
    return int(10 ** get_currency_precision(settings.BILLING_CURRENCY))


def format_money(cents: int | None) -> str:
    if cents is None:
        return "—"
    return format_currency(Decimal(cents) / minor_units(), settings.BILLING_CURRENCY, locale=LOCALE)


def format_signed_money(cents: int) -> str:
    """A change: `+$1.00`, `-$1.00`, or `$0.00`."""
    return ("+" if cents > 0 else "") + format_money(cents)


def cents_of(amount: Decimal) -> int:
    """An amount in the currency (`49.21`) as minor units (`4921`); ValueError if it has more
    decimals than the currency has."""
    cents = amount * minor_units()
    if cents != cents.to_integral_value():
        places = get_currency_precision(settings.BILLING_CURRENCY)
        raise ValueError(f"{settings.BILLING_CURRENCY} amounts have at most {places} decimals.")
    return int(cents)

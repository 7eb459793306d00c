"""The one rule for a phone number we dial from or to: a *possible* number in E.164.

The API (`calls.serializers.E164Field`) and the admin (`E164PhoneNumberField`) both use it, so a
number the API accepts is a number the admin saves, and the reverse.
"""

from __future__ import annotations

from typing import Any

import phonenumbers
from django import forms
from django.core.exceptions import ValidationError
from phonenumber_field.modelfields import PhoneNumberField

EXAMPLE = "+15551234567"


def parse_e164(value: str) -> str:
    """The number in canonical E.164, or ValueError. `+1 (555) 123-4567` is accepted too.

    Possible, not valid: the docs' own examples (+1555...) are fictional numbers that
    phonenumbers rightly calls invalid, and only the carrier knows whether a number is live.
    """
    if not value.startswith("+"):
        raise ValueError("must start with + and a country code")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(str(exc)) from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("is not a possible phone number")
    if parsed.extension:
        # E.164 has no extensions: dialling the number without it would reach someone else.
        raise ValueError("must not have an extension")
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if len(number) > 16:
        # phonenumbers calls some longer numbers possible (+81 and 14 digits), but E.164,
        # which every provider takes, stops at 15 digits.
        raise ValueError("is longer than the 15 digits E.164 allows")
    # Formatting can lose digits of odd input (`+270000000` came out as `+27000000`): dial only
    # a number that reads back as the one we were given.
    if phonenumbers.parse(number, None) != parsed:
        raise ValueError("does not survive formatting as E.164")
    return number


def _message(reason: str) -> str:
    return f"Enter a phone number in E.164 format, e.g. {EXAMPLE}: this one {reason}."


def validate_e164(value: Any) -> None:
    if value in (None, ""):
        return
    try:
        parse_e164(str(value))
    except ValueError as exc:
        raise ValidationError(_message(str(exc)), code="e164") from None


class E164FormField(forms.CharField):
    """A form field that takes what the API takes and cleans it to E.164."""

    def __init__(self, **kwargs: Any) -> None:
        for key in ("region", "choices_form_class", "widget"):
            kwargs.pop(key, None)  # what PhoneNumberField.formfield hands its own form field
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        text = super().to_python(value)
        if not text:
            return ""
        try:
            return parse_e164(text)
        except ValueError as exc:
            raise ValidationError(_message(str(exc)), code="e164") from None


class E164PhoneNumberField(PhoneNumberField):
    """django-phonenumber-field's model field under our rule: it would refuse the numbers the API
    accepts (`is_valid`), the demo's own +1555 numbers among them."""

    default_validators = [validate_e164]

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(form_class=E164FormField, **kwargs)

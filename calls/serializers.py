"""Input fields shared by the calls API and the place_test_call command."""

from __future__ import annotations

import math
import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from burki.text import unspeakable
from telephony.e164 import parse_e164

MAX_VARIABLES = 50
MAX_VARIABLE_VALUE_LENGTH = 1000


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField would turn 5 or true into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class SpokenTextField(StrictCharField):
    """Text the assistant says or is guided by: no control characters (burki.text). Checked
    after DRF's own validators, so NUL and surrogates keep their own sentences."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.append(self._check_speakable)

    def _check_speakable(self, value: str) -> None:
        if unspeakable(value):
            raise serializers.ValidationError(
                self.error_messages["unspeakable"], code="unspeakable"
            )


class E164Field(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            return parse_e164(value)
        except ValueError:
            self.fail("e164")


def required_messages(name: str, **extra: str) -> dict[str, Any]:
    return {
        "required": f"{name} is required",
        "null": f"{name} is required",
        "blank": f"{name} is required",
        **extra,
    }


def e164_messages(name: str) -> dict[str, Any]:
    return required_messages(
        name,
        invalid=f"{name} must be a string",
        e164=f"{name} must be a phone number in E.164 format, e.g. +15551234567",
        max_length=f"{name} must be a phone number in E.164 format, e.g. +15551234567",
    )


def text_messages(name: str, max_length: int) -> dict[str, Any]:
    return {
        "invalid": f"{name} must be a string",
        "max_length": f"{name} must be at most {max_length} characters",
        "null_characters_not_allowed": f"{name} must not contain NUL characters",
        "surrogate_characters_not_allowed": f"{name} must not contain surrogate characters",
        "unspeakable": f"{name} must not contain control characters (tabs and newlines are "
        "allowed)",
    }


def optional_spoken_text(name: str, max_length: int, **kwargs: Any) -> SpokenTextField:
    """An optional text the assistant says or is given (`welcome_message`, `agenda`): blank or
    null allowed, kept exactly as written, with the field's own error sentences."""
    return SpokenTextField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        max_length=max_length,
        error_messages=text_messages(name, max_length),
        **kwargs,
    )


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": MAX_VARIABLES,
        "additionalProperties": {
            "oneOf": [
                {"type": "string", "maxLength": MAX_VARIABLE_VALUE_LENGTH},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
        "description": (
            "Custom variables for template substitution in welcome_message and agenda using "
            "{{variable}} syntax. Names are letters, digits and underscores (not starting with "
            "a digit, at most 64 characters); values are strings, numbers or booleans."
        ),
        "example": {"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
    }
)
class VariablesField(serializers.Field):
    """An object of names to scalars (string, number, boolean)."""

    default_error_messages = {
        "not_a_dict": "variables must be an object",
        "too_many": f"variables may hold at most {MAX_VARIABLES} entries",
        # The name is not echoed: it may hold anything, lone surrogates included.
        "bad_name": "variables: a name must be letters, digits and underscores, at most 64",
        "bad_value": "variables.{name} must be a string, number or boolean",
        "too_long": f"variables.{{name}} must be at most {MAX_VARIABLE_VALUE_LENGTH} characters",
        "bad_text": "variables.{name} must not contain NUL or surrogate characters",
        "unspeakable": "variables.{name} must not contain control characters (tabs and "
        "newlines are allowed)",
    }

    def to_internal_value(self, data: Any) -> dict[str, str | int | float | bool]:
        from calls.templating import NAME

        if not isinstance(data, dict):
            self.fail("not_a_dict")
        if len(data) > MAX_VARIABLES:
            self.fail("too_many")
        for name, value in data.items():
            if not NAME.fullmatch(name):
                self.fail("bad_name")
            if not isinstance(value, str | int | float | bool):
                self.fail("bad_value", name=name)
            if isinstance(value, float) and not math.isfinite(value):
                self.fail("bad_value", name=name)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
                self.fail("bad_value", name=name)
            if isinstance(value, str):
                if len(value) > MAX_VARIABLE_VALUE_LENGTH:
                    self.fail("too_long", name=name)
                if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
                    self.fail("bad_text", name=name)
                if unspeakable(value):
                    self.fail("unspeakable", name=name)
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
METADATA_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": MAX_METADATA_KEYS,
        "additionalProperties": {
            "oneOf": [
                {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH},
                {"type": "number"},
                {"type": "boolean"},
            ],
            "nullable": True,
        },
        "description": (
            "Your own keys and values, stored on the call, shown by `GET /calls/{call_id}` and "
            f"carried in every webhook event about it. At most {MAX_METADATA_KEYS} keys of "
            f"letters, digits and `_ . : -` (at most {MAX_METADATA_KEY_LENGTH} characters); "
            "values are strings (at most "
            f"{MAX_METADATA_VALUE_LENGTH} characters), numbers, booleans or null."
        ),
        "example": {"crm_contact_id": "c_8231", "attempt": 2},
    }
)
class MetadataField(serializers.Field):
    """The customer's own object of keys to scalars, echoed back and never interpreted."""

    default_error_messages = {
        "not_a_dict": "metadata must be an object",
        "too_many": f"metadata may hold at most {MAX_METADATA_KEYS} keys",
        "bad_key": (
            "metadata: a key must be letters, digits and _ . : -, at most "
            f"{MAX_METADATA_KEY_LENGTH} characters"
        ),
        "bad_value": "metadata.{name} must be a string, number, boolean or null",
        "too_long": f"metadata.{{name}} must be at most {MAX_METADATA_VALUE_LENGTH} characters",
        "bad_text": "metadata.{name} must not contain NUL, surrogate or control characters",
    }

    def to_internal_value(self, data: Any) -> dict[str, str | int | float | bool | None]:
        if not isinstance(data, dict):
            self.fail("not_a_dict")
        if len(data) > MAX_METADATA_KEYS:
            self.fail("too_many")
        for key, value in data.items():
            if not METADATA_KEY.fullmatch(key):
                self.fail("bad_key")
            if value is not None and not isinstance(value, str | int | float | bool):
                self.fail("bad_value", name=key)
            if isinstance(value, float) and not math.isfinite(value):
                self.fail("bad_value", name=key)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
                self.fail("bad_value", name=key)
            if isinstance(value, str):
                if len(value) > MAX_METADATA_VALUE_LENGTH:
                    self.fail("too_long", name=key)
                if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
                    self.fail("bad_text", name=key)
                if unspeakable(value):
                    self.fail("bad_text", name=key)
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


MAX_VOICEMAIL_MESSAGE_LENGTH = 1000
ON_MACHINE_CHOICES = ["hangup", "leave_message", "continue"]


class VoicemailSerializer(serializers.Serializer):
    """Answering-machine detection for one call (POST /calls/initiate's `voicemail`)."""

    default_error_messages = {"invalid": "voicemail must be an object"}

    detect = serializers.BooleanField(
        required=False,
        default=True,
        help_text="Ask the provider's answering-machine detection who answers (default true; "
        "false is the same as leaving `voicemail` out).",
        error_messages={"invalid": "voicemail.detect must be true or false"},
    )
    on_machine = serializers.ChoiceField(
        choices=ON_MACHINE_CHOICES,
        help_text=(
            "What happens when a machine answers: `hangup` ends the call at once; "
            "`leave_message` waits for the end of the greeting (the beep), says `message` with "
            "the provider's text-to-speech and hangs up; `continue` hands the call to the "
            "assistant as any call. A fax is hung up on unless `continue`."
        ),
        error_messages={
            "required": "voicemail.on_machine is required",
            "null": "voicemail.on_machine is required",
            "invalid_choice": "voicemail.on_machine must be one of: "
            + ", ".join(ON_MACHINE_CHOICES),
        },
    )
    message = SpokenTextField(
        required=False,
        allow_blank=False,
        trim_whitespace=False,
        max_length=MAX_VOICEMAIL_MESSAGE_LENGTH,
        help_text=(
            "What to leave on the machine (required for `leave_message`, and only used by it). "
            "Supports variable substitution using {{variable}} syntax."
        ),
        error_messages={
            **text_messages("voicemail.message", MAX_VOICEMAIL_MESSAGE_LENGTH),
            "blank": "voicemail.message must not be empty",
            "null": "voicemail.message must be a string",
        },
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        leaves = attrs.get("on_machine") == "leave_message"
        if leaves and not attrs.get("message"):
            raise serializers.ValidationError(
                {"message": ["voicemail.message is required when on_machine is leave_message"]}
            )
        if not leaves and "message" in attrs:
            raise serializers.ValidationError(
                {"message": ["voicemail.message is only used when on_machine is leave_message"]}
            )
        return attrs

"""The input of a recipient row, with the fields `POST /calls/initiate` validates them with."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from calls.serializers import E164Field, MetadataField, VariablesField, e164_messages


class RecipientRowSerializer(serializers.Serializer):
    to_phone_number = E164Field(
        error_messages=e164_messages("to_phone_number"),
        help_text="Who to call, in E.164 format (as `POST /calls/initiate` takes it).",
    )
    variables = VariablesField(required=False, allow_null=True)
    metadata = MetadataField(required=False, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["a recipient must be an object"]}
            )
        return super().to_internal_value(data)

"""The OpenAPI schema (/api/schema/) and its Swagger UI (/api/docs/)."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.exceptions import Throttled
from rest_framework.test import APIClient

from billing.errors import InsufficientBalance
from calls.errors import (
    CallNotInProgress,
    CallsPerSecondExceeded,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    NumberOnDoNotCallList,
    ProviderFailed,
    ProviderTimedOut,
    ProviderUnavailable,
    TooManyConcurrentCalls,
)
from calls.permissions import FromNumberBelongsToOrganization
from calls.selectors import Caller

SEED_REQUEST_EXAMPLES = {
    "BasicCall": {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"},
    "CallWithVariables": {
        "from_phone_number": "+15551234567",
        "to_phone_number": "+15559876543",
        "welcome_message": (
            "Hello {{name}}, this is a reminder about your appointment tomorrow at {{time}}."
        ),
        "agenda": "Remind {{name}} about their upcoming {{appointment_type}} appointment.",
        "variables": {"name": "John Doe", "time": "10 AM", "appointment_type": "dental"},
    },
    "CallWithAssistantOverride": {
        "from_phone_number": "+15551234567",
        "to_phone_number": "+15559876543",
        "assistant_id": 456,
        "welcome_message": "Hi there! I'm calling about your recent inquiry.",
    },
}


@pytest.fixture
def schema(db: None) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def example_details(response: dict[str, Any]) -> list[str]:
    examples = response["content"]["application/json"]["examples"].values()
    return [example["value"]["detail"] for example in examples]


def test_the_schema_generates_without_a_warning() -> None:
    out = StringIO()
    # --fail-on-warn turns any warning or error of drf-spectacular into a failure here.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out
    )

    assert json.loads(out.getvalue())["openapi"].startswith("3.")


def test_the_schema_is_public_and_lists_only_the_client_api(schema: dict[str, Any]) -> None:
    assert {path: sorted(ops) for path, ops in schema["paths"].items()} == {
        "/billing/balance": ["get"],
        "/billing/ledger": ["get"],
        "/calls": ["get"],
        "/calls/{call_id}": ["get"],
        "/calls/{call_id}/hangup": ["post"],
        "/calls/{call_id}/transfer": ["post"],
        "/calls/initiate": ["post"],
        "/campaigns": ["get", "post"],
        "/campaigns/{campaign_id}": ["get"],
        "/campaigns/{campaign_id}/cancel": ["post"],
        "/campaigns/{campaign_id}/pause": ["post"],
        "/campaigns/{campaign_id}/recipients": ["get", "post"],
        "/campaigns/{campaign_id}/resume": ["post"],
        "/campaigns/{campaign_id}/start": ["post"],
        "/do-not-call": ["get", "post"],
        "/do-not-call/{number}": ["delete"],
        "/webhook-endpoints": ["get", "post"],
        "/webhook-endpoints/{endpoint_id}": ["delete", "get", "patch"],
        "/webhook-endpoints/{endpoint_id}/deliveries": ["get"],
        "/webhook-endpoints/{endpoint_id}/rotate-secret": ["post"],
        "/webhook-events/{event_id}/redeliver": ["post"],
    }


def test_hanging_up_documents_its_answers(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/calls/{call_id}/hangup"]["post"]

    assert sorted(operation["responses"]) == ["200", "401", "404", "405", "409", "429", "502"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallDetail"
    }
    assert "requestBody" not in operation


def test_transferring_documents_its_answers(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/calls/{call_id}/transfer"]["post"]

    assert sorted(operation["responses"]) == [
        "200", "400", "401", "403", "404", "405", "409", "422", "429", "502",
    ]  # fmt: skip
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallDetail"
    }
    assert example_details(operation["responses"]["409"]) == [
        CallNotInProgress("completed").message
    ]
    assert example_details(operation["responses"]["422"]) == [
        "Sandbox calls cannot be transferred."
    ]
    assert example_details(operation["responses"]["403"]) == [
        "+15557654321 is on your organization's do-not-call list; the call was not transferred."
    ]
    body = schema["components"]["schemas"]["TransferCallRequest"]
    assert (body["required"], list(body["properties"])) == (
        ["to_phone_number"],
        ["to_phone_number"],
    )


def test_every_operation_needs_the_bearer_key(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "Bearer authentication header of the form `Bearer <token>`, where `<token>` is "
                "your organization's API key. A key is shown once, when it is created."
            ),
        }
    }
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert operation["security"] == [{"bearerAuth": []}]
            assert "401" in operation["responses"]
            assert set(operation["responses"]["401"]["headers"]) == {"WWW-Authenticate"}


def test_every_operation_may_be_throttled_and_says_when_to_retry(schema: dict[str, Any]) -> None:
    throttled = str(Throttled(wait=60).detail)
    assert throttled == "Request was throttled. Expected available in 60 seconds."
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            response = operation["responses"]["429"]
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, path
            assert example_details(response)[-1] == throttled, path
            assert response["headers"] == {
                "Retry-After": {
                    "schema": {"type": "integer"},
                    "description": "How many seconds to wait before trying again.",
                }
            }, path


def test_initiate_documents_every_request_field_with_the_seeds_words(
    schema: dict[str, Any],
) -> None:
    body = schema["components"]["schemas"]["InitiateCallRequest"]

    assert body["required"] == ["from_phone_number", "to_phone_number"]
    assert list(body["properties"]) == [
        "from_phone_number",
        "to_phone_number",
        "assistant_id",
        "welcome_message",
        "agenda",
        "variables",
        "metadata",
        "voicemail",
    ]
    descriptions = {name: field["description"] for name, field in body["properties"].items()}
    assert descriptions["from_phone_number"] == (
        "The phone number to call from, in E.164 format. This number must be assigned to an "
        "assistant or ConversationFlow in your organization."
    )
    assert descriptions["to_phone_number"] == (
        "The destination phone number to call, in E.164 format."
    )
    assert descriptions["assistant_id"].startswith(
        "Override the default assistant attached to the phone number."
    )
    assert descriptions["variables"].startswith(
        "Custom variables for template substitution in welcome_message and agenda using "
        "{{variable}} syntax."
    )
    for field in ("welcome_message", "agenda"):
        assert "Supports variable substitution using {{variable}} syntax." in descriptions[field]
    assert body["properties"]["assistant_id"]["type"] == "integer"
    assert body["properties"]["variables"]["type"] == "object"


def test_initiate_carries_the_seeds_three_request_examples_and_a_voicemail_one(
    schema: dict[str, Any],
) -> None:
    request_body = schema["paths"]["/calls/initiate"]["post"]["requestBody"]
    examples = request_body["content"]["application/json"]["examples"]

    assert {name: example["value"] for name, example in examples.items()} == {
        **SEED_REQUEST_EXAMPLES,
        "CallWithVoicemail": {
            "from_phone_number": "+15551234567",
            "to_phone_number": "+15559876543",
            "variables": {"name": "John Doe"},
            "voicemail": {
                "detect": True,
                "on_machine": "leave_message",
                "message": "Hi {{name}}, this is Acme Dental. Please call us back.",
            },
        },
    }
    assert list(request_body["content"]) == ["application/json"]


def test_initiate_documents_the_success_and_every_error_status(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/calls/initiate"]["post"]["responses"]

    assert sorted(responses) == [
        "200", "400", "401", "402", "403", "404", "405", "409", "415", "422", "429",
        "502", "503", "504",
    ]  # fmt: skip
    success = responses["200"]["content"]["application/json"]
    assert success["schema"] == {"$ref": "#/components/schemas/InitiateCallResponse"}
    assert schema["components"]["schemas"]["InitiateCallResponse"]["required"] == [
        "call_id",
        "call_sid",
        "message",
    ]
    assert success["examples"]["CallInitiated"]["value"]["message"] == (
        "Call initiated successfully"
    )
    for status, response in responses.items():
        if status not in ("200", "504"):
            schema_ref = response["content"]["application/json"]["schema"]
            assert schema_ref == {"$ref": "#/components/schemas/Error"}, status
    # The 504 is the error body and the call that may have been placed, to follow.
    timed_out = responses["504"]["content"]["application/json"]["schema"]
    assert timed_out == {"$ref": "#/components/schemas/TimedOutError"}
    body = schema["components"]["schemas"]["TimedOutError"]
    assert sorted(body["properties"]) == ["call_id", "detail", "errors"]
    assert sorted(body["required"]) == ["call_id", "detail"]


def test_the_error_examples_are_the_seeds_and_the_apis_own_sentences(
    schema: dict[str, Any],
) -> None:
    responses = schema["paths"]["/calls/initiate"]["post"]["responses"]

    assert "from_phone_number is required" in example_details(responses["400"])
    assert example_details(responses["402"]) == [InsufficientBalance.default_message]
    assert InsufficientBalance.default_message == (
        "Insufficient balance. Please add funds to continue making calls."
    )
    no_ones_number = Caller(number="+15551234567", phone_number=None)
    assert example_details(responses["403"])[0] == FromNumberBelongsToOrganization.refusal(
        no_ones_number, organization_id=None
    )
    assert example_details(responses["403"])[0] == (
        "Unauthorized: phone number +15551234567 does not belong to your organization"
    )
    assert example_details(responses["404"])[0] == (
        "No assistant found for phone number +15551234567"
    )
    assert example_details(responses["502"]) == [ProviderFailed.default_message]
    assert example_details(responses["503"]) == [ProviderUnavailable.default_message]
    assert example_details(responses["504"]) == [ProviderTimedOut.default_message]
    assert example_details(responses["409"]) == [IdempotencyKeyInFlight.default_message]
    assert example_details(responses["422"]) == [
        IdempotencyKeyReused.default_message,
        "BYO SIP trunk numbers cannot detect answering machines: leave voicemail out, or call "
        "from a Twilio, Telnyx, Vonage or sandbox number.",
    ]
    assert example_details(responses["429"]) == [
        "Too many simultaneous calls: your organization's limit is 10. "
        "Try again when a call has ended.",
        CallsPerSecondExceeded("1", 1).message,
        "Request was throttled. Expected available in 60 seconds.",
    ]
    assert example_details(responses["403"])[-1] == NumberOnDoNotCallList("+15559876543").message
    assert example_details(responses["429"])[0] == TooManyConcurrentCalls(10).message


def test_initiate_takes_an_optional_idempotency_key(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/calls/initiate"]["post"]
    [parameter] = operation["parameters"]

    assert parameter["in"] == "header"
    assert parameter["name"] == "Idempotency-Key"
    assert parameter.get("required", False) is False
    assert parameter["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[ -~]+$",
    }
    for words in ("1 to 255 printable ASCII", "Idempotent-Replayed: true", "422", "409"):
        assert words in parameter["description"]
    assert example_details(operation["responses"]["400"])[-1] == (
        IdempotencyKeyInvalid.default_message
    )
    assert IdempotencyKeyInvalid.default_message == (
        "Idempotency-Key must be 1 to 255 printable ASCII characters."
    )


def test_a_replayed_answer_is_marked_on_every_status_that_can_be_replayed(
    schema: dict[str, Any],
) -> None:
    responses = schema["paths"]["/calls/initiate"]["post"]["responses"]

    marked = sorted(
        status
        for status, response in responses.items()
        if "Idempotent-Replayed" in response.get("headers", {})
    )
    # A kept answer is any the request reached once it ran (calls/idempotency.py).
    assert marked == ["200", "400", "402", "404", "422", "502", "504"]
    assert responses["200"]["headers"]["Idempotent-Replayed"]["schema"] == {
        "type": "string",
        "enum": ["true"],
    }


def test_the_call_list_is_cursor_paginated_and_filters_by_status(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/calls"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert sorted(parameters) == ["cursor", "page_size", "status"]
    assert parameters["status"]["schema"]["enum"] == [
        "queued", "unknown", "initiated", "ringing", "in-progress", "completed",
        "busy", "no-answer", "failed", "canceled",
    ]  # fmt: skip
    assert sorted(operation["responses"]) == ["200", "400", "401", "404", "429"]
    page = schema["components"]["schemas"]["PaginatedCallList"]
    assert sorted(page["properties"]) == ["next", "previous", "results"]
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/Call"}


def test_a_call_is_described_with_every_field_it_always_has(schema: dict[str, Any]) -> None:
    call = schema["components"]["schemas"]["CallDetail"]

    assert sorted(call["required"]) == sorted(call["properties"])
    assert call["properties"]["events"]["items"] == {"$ref": "#/components/schemas/CallEvent"}
    for nullable in ("assistant_id", "conversation_flow_id", "duration_seconds", "cost_cents"):
        assert call["properties"][nullable]["nullable"] is True
    detail = schema["paths"]["/calls/{call_id}"]["get"]
    assert sorted(detail["responses"]) == ["200", "401", "404", "429"]


def test_the_balance_is_described_in_integer_minor_units(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/billing/balance"]["get"]

    assert operation["tags"] == ["billing"]
    assert sorted(operation["responses"]) == ["200", "401", "429"]
    success = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert success == {"$ref": "#/components/schemas/Balance"}
    balance = schema["components"]["schemas"]["Balance"]
    assert {name: field["type"] for name, field in balance["properties"].items()} == {
        "balance_cents": "integer",
        "reserved_cents": "integer",
        "available_cents": "integer",
        "currency": "string",
        "rate_cents_per_minute": "integer",
    }
    assert sorted(balance["required"]) == sorted(balance["properties"])


def test_the_ledger_is_cursor_paginated_with_every_entry_field(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/billing/ledger"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert operation["tags"] == ["billing"]
    assert sorted(parameters) == ["cursor", "page_size"]
    assert parameters["page_size"]["description"].startswith(
        "Entries per page: 50 by default, at most 200"
    )
    assert sorted(operation["responses"]) == ["200", "401", "404", "429"]
    assert example_details(operation["responses"]["404"]) == ["Invalid cursor"]
    page = schema["components"]["schemas"]["PaginatedLedgerEntryList"]
    assert sorted(page["properties"]) == ["next", "previous", "results"]
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/LedgerEntry"}
    entry = schema["components"]["schemas"]["LedgerEntry"]
    assert list(entry["properties"]) == [
        "id",
        "kind",
        "amount_cents",
        "reserved_change_cents",
        "balance_after_cents",
        "reserved_after_cents",
        "call_id",
        "memo",
        "created_at",
    ]
    assert sorted(entry["required"]) == sorted(entry["properties"])
    assert entry["properties"]["call_id"]["nullable"] is True
    assert schema["components"]["schemas"]["LedgerEntryKind"]["enum"] == [
        "top_up", "hold", "release", "charge", "adjustment",
    ]  # fmt: skip


def test_the_schema_can_be_read_as_yaml_too(db: None) -> None:
    response = APIClient().get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert response.content.startswith(b"openapi: 3.0.3")


def test_the_docs_page_serves_swagger_ui_from_our_own_static_files(db: None) -> None:
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "/api/schema/" in html
    assert "cdn.jsdelivr.net" not in html


def test_a_campaign_takes_and_shows_the_voicemail_of_initiate(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    body = components["CampaignCreateRequest"]["properties"]
    assert body["voicemail"]["allOf"] == [{"$ref": "#/components/schemas/VoicemailRequest"}]
    assert body["voicemail"]["nullable"] is True
    initiate = components["InitiateCallRequest"]["properties"]["voicemail"]
    assert body["voicemail"]["allOf"] == initiate["allOf"]  # one shape, one serializer
    assert list(components["VoicemailRequest"]["properties"]) == ["detect", "on_machine", "message"]
    for shown in ("Campaign", "CampaignDetail"):
        assert components[shown]["properties"]["voicemail"]["allOf"] == [
            {"$ref": "#/components/schemas/Voicemail"}
        ]
        assert "voicemail" in components[shown]["required"]

    retry_on = components["RetryRequest"]["properties"]["on"]
    assert components[retry_on["items"]["$ref"].rsplit("/", 1)[-1]]["enum"] == [
        "busy",
        "no-answer",
        "machine",
        "failed",
    ]
    assert "`machine`" in retry_on["description"]

    operation = schema["paths"]["/campaigns"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert examples["Voicemail"]["value"]["retry"]["on"] == ["machine"]
    assert example_details(operation["responses"]["422"]) == [
        "BYO SIP trunk numbers cannot detect answering machines: leave voicemail out, or call "
        "from a Twilio, Telnyx, Vonage or sandbox number."
    ]
    recipient = components["CampaignRecipient"]["properties"]["outcome"]
    assert "`machine` (answered by a machine (or a fax))" in recipient["description"]

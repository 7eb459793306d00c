"""The campaigns API and the do-not-call list: one APIView per operation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import Prefetch
from django.http import Http404
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import parsers, serializers, status
from rest_framework.exceptions import ParseError, PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from burki.authentication import request_api_key
from burki.pagination import NewestFirstCursorPagination
from burki.parsers import JSONParser
from calls.do_not_call import do_not_call_add, do_not_call_remove
from calls.models import DoNotCallNumber
from calls.permissions import caller_refusal
from calls.selectors import caller_named
from calls.serializers import (
    E164Field,
    MetadataField,
    StrictCharField,
    VoicemailSerializer,
    e164_messages,
    optional_spoken_text,
)
from calls.services import Voicemail
from campaigns import openapi
from campaigns.errors import RecipientsInvalid
from campaigns.models import (
    RETRYABLE,
    WEEKDAYS,
    Attempt,
    Campaign,
    Outcome,
    Recipient,
    RecipientState,
)
from campaigns.serializers import RecipientRowSerializer
from campaigns.services import (
    MAX_FROM_NUMBERS,
    MAX_RECIPIENTS_PER_REQUEST,
    CallingWindow,
    RetryRule,
    campaign_cancel,
    campaign_create,
    campaign_pause,
    campaign_progress,
    campaign_resume,
    campaign_start,
    recipients_add,
    recipients_add_csv,
)
from telephony.e164 import parse_e164

MAX_NAME_LENGTH = 200
OUTCOME_HELP = (
    "How it ended, empty until it has: "
    + ", ".join(f"`{value}` ({label.lower()})" for value, label in Outcome.choices)
    + "."
)
MAX_WELCOME_LENGTH = 2000
MAX_AGENDA_LENGTH = 4000


class CSVParser(parsers.BaseParser):
    """`text/csv`: the body as text (UTF-8), for the service to read row by row."""

    media_type = "text/csv"

    def parse(  # type: ignore[override]  # text, which the view reads as the CSV
        self, stream: Any, media_type: Any = None, parser_context: Any = None
    ) -> str:
        try:
            return stream.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ParseError("The CSV must be UTF-8 text.") from None


def recipients_invalid_response(exc: RecipientsInvalid) -> Response:
    return Response(
        {"detail": exc.message, "rows": [row.as_dict() for row in exc.rows]},
        status=status.HTTP_400_BAD_REQUEST,
    )


def organization_campaign(request: Request, campaign_id: UUID) -> Campaign:
    campaign = (
        Campaign.objects.select_related("organization")
        .filter(organization_id=request_api_key(request).organization_id, pk=campaign_id)
        .first()
    )
    if campaign is None:
        raise Http404
    return campaign


class WindowSerializer(serializers.Serializer):
    start = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"])
    end = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"])
    days = serializers.ListField(
        child=serializers.ChoiceField(choices=WEEKDAYS), required=False, max_length=7
    )


class RetrySerializer(serializers.Serializer):
    max_attempts = serializers.IntegerField(min_value=1, max_value=10)
    on = serializers.ListField(
        child=serializers.ChoiceField(choices=[str(o) for o in RETRYABLE]),
        required=False,
        max_length=len(RETRYABLE),
        help_text="The outcomes of an attempt that earn another: "
        + ", ".join(f"`{o}`" for o in RETRYABLE)
        + " (`machine`: answered by a machine or a fax, on a campaign with `voicemail`).",
    )
    backoff_seconds = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=7 * 86400),
        required=False,
        max_length=10,
    )


@extend_schema_serializer(component_name="Campaign")
class CampaignOutputSerializer(serializers.Serializer):
    campaign_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    status = serializers.CharField()
    from_phone_numbers = serializers.ListField(child=serializers.CharField(), source="from_numbers")
    assistant_id = serializers.IntegerField(allow_null=True)
    welcome_message = serializers.CharField(allow_null=True)
    agenda = serializers.CharField()
    metadata = serializers.DictField()
    voicemail = VoicemailSerializer(
        allow_null=True,
        help_text="The answering-machine detection of every call of the campaign, as given; "
        "null when not asked for.",
    )
    calls_per_second = serializers.DecimalField(max_digits=7, decimal_places=2)
    max_concurrent_calls = serializers.IntegerField()
    calling_window = serializers.SerializerMethodField()
    retry = serializers.SerializerMethodField()
    start_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)

    def get_calling_window(self, campaign: Campaign) -> dict[str, Any] | None:
        if not campaign.has_window:
            return None
        return WindowSerializer(
            {
                "start": campaign.window_start,
                "end": campaign.window_end,
                "days": campaign.window_days,
            }
        ).data

    def get_retry(self, campaign: Campaign) -> dict[str, Any]:
        return {
            "max_attempts": campaign.retry_max_attempts,
            "on": campaign.retry_on,
            "backoff_seconds": campaign.retry_backoff_seconds,
        }


@extend_schema_serializer(component_name="CampaignProgress")
class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Recipients in the campaign.")
    by_state = serializers.DictField(child=serializers.IntegerField())
    by_outcome = serializers.DictField(child=serializers.IntegerField())
    dials_last_minute = serializers.IntegerField()
    measured_calls_per_second = serializers.FloatField()
    estimated_end_at = serializers.DateTimeField(allow_null=True)


@extend_schema_serializer(component_name="CampaignDetail")
class CampaignDetailSerializer(CampaignOutputSerializer):
    progress = ProgressSerializer()


class CampaignPagination(NewestFirstCursorPagination):
    items = "Campaigns"


class CampaignListApi(APIView):
    """GET /campaigns: your campaigns, newest first; POST /campaigns: a new (draft) campaign."""

    @extend_schema_serializer(component_name="CampaignCreate")
    class InputSerializer(serializers.Serializer):
        name = StrictCharField(max_length=MAX_NAME_LENGTH)
        from_phone_number = E164Field(
            required=False, error_messages=e164_messages("from_phone_number")
        )
        from_phone_numbers = serializers.ListField(
            child=E164Field(error_messages=e164_messages("from_phone_numbers")),
            required=False,
            min_length=1,
            max_length=MAX_FROM_NUMBERS,
            help_text="Several of your numbers, used in turn as caller id (instead of "
            "from_phone_number).",
        )
        assistant_id = serializers.IntegerField(
            required=False, allow_null=True, min_value=1, max_value=2**63 - 1
        )
        welcome_message = optional_spoken_text("welcome_message", MAX_WELCOME_LENGTH)
        agenda = optional_spoken_text("agenda", MAX_AGENDA_LENGTH)
        metadata = MetadataField(required=False, allow_null=True)
        voicemail = VoicemailSerializer(
            required=False,
            allow_null=True,
            help_text=(
                "Optional: answering-machine detection on every call, as `POST /calls/initiate` "
                "takes it; `message` placeholders are checked against each recipient's "
                "variables. An attempt a machine (or a fax) answered ends with the outcome "
                "`machine`, which `retry.on` may name. Not offered on BYO SIP trunk numbers "
                "(422)."
            ),
        )
        recipients = serializers.ListField(
            child=RecipientRowSerializer(),
            required=False,
            max_length=MAX_RECIPIENTS_PER_REQUEST,
            help_text="Up to 10,000 recipients; more through POST /campaigns/{id}/recipients. "
            "Each row is checked as POST /calls/initiate checks its body.",
        )
        calls_per_second = serializers.DecimalField(
            max_digits=7,
            decimal_places=2,
            min_value=Decimal("0.01"),
            max_value=Decimal(1000),
            required=False,
        )
        max_concurrent_calls = serializers.IntegerField(
            min_value=1, max_value=10_000, required=False
        )
        calling_window = WindowSerializer(required=False, allow_null=True)
        retry = RetrySerializer(required=False, allow_null=True)
        start_at = serializers.DateTimeField(required=False, allow_null=True)

        def to_internal_value(self, data: Any) -> Any:
            if not isinstance(data, dict):
                raise serializers.ValidationError(
                    {"non_field_errors": ["The request body must be a JSON object."]}
                )
            # Rows are validated by the service, which reports every bad line at once.
            rows = data.get("recipients")
            values = super().to_internal_value({k: v for k, v in data.items() if k != "recipients"})
            if rows is not None:
                if not isinstance(rows, list):
                    raise serializers.ValidationError({"recipients": ["recipients must be a list"]})
                if len(rows) > MAX_RECIPIENTS_PER_REQUEST:
                    raise serializers.ValidationError(
                        {
                            "recipients": [
                                f"recipients may hold at most {MAX_RECIPIENTS_PER_REQUEST}"
                            ]
                        }
                    )
                values["recipients"] = rows
            return values

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            numbers = data.get("from_phone_numbers") or (
                [data["from_phone_number"]] if data.get("from_phone_number") else []
            )
            if not numbers:
                raise serializers.ValidationError(
                    {"from_phone_number": ["from_phone_number is required"]}
                )
            data["numbers"] = numbers
            return data

    pagination_class = CampaignPagination

    @openapi.list_campaigns(item=CampaignOutputSerializer)
    def get(self, request: Request) -> Response:
        campaigns = Campaign.objects.filter(
            organization_id=request_api_key(request).organization_id
        ).order_by("-created_at", "-id")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(campaigns, request, view=self) or []
        return paginator.get_paginated_response(CampaignOutputSerializer(page, many=True).data)

    @openapi.create_campaign(request=InputSerializer, response=CampaignDetailSerializer)
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        organization = request_api_key(request).organization
        phone_numbers, assistant = [], None
        for number in data["numbers"]:
            caller = caller_named(number=number, assistant_id=data.get("assistant_id"))
            refusal = caller_refusal(caller, organization_id=organization.pk)
            if refusal is not None:
                raise PermissionDenied(refusal)
            assert caller.phone_number is not None  # the refusal saw to it
            phone_numbers.append(caller.phone_number)
            assistant = caller.assistant
        window, retry = data.get("calling_window"), data.get("retry")
        try:
            campaign = campaign_create(
                organization=organization,
                name=data["name"],
                phone_numbers=phone_numbers,
                assistant=assistant,
                welcome_message=data.get("welcome_message"),
                agenda=data.get("agenda") or "",
                metadata=data.get("metadata"),
                calls_per_second=data.get("calls_per_second") or Decimal(1),
                max_concurrent_calls=data.get("max_concurrent_calls") or 10,
                window=CallingWindow(window["start"], window["end"], window.get("days") or [])
                if window
                else None,
                retry=RetryRule(
                    retry["max_attempts"], retry.get("on") or [], retry.get("backoff_seconds") or []
                )
                if retry
                else None,
                start_at=data.get("start_at"),
                recipients=data.get("recipients"),
                voicemail=Voicemail.from_request(data.get("voicemail")),
            )
        except RecipientsInvalid as exc:
            return recipients_invalid_response(exc)
        return Response(campaign_detail(campaign), status=status.HTTP_201_CREATED)


def campaign_detail(campaign: Campaign) -> dict[str, Any]:
    data = dict(CampaignOutputSerializer(campaign).data)
    data["progress"] = ProgressSerializer(campaign_progress(campaign=campaign)).data
    return data


class CampaignDetailApi(APIView):
    """GET /campaigns/{campaign_id}: one campaign with its progress."""

    @openapi.retrieve_campaign(detail=CampaignDetailSerializer)
    def get(self, request: Request, campaign_id: UUID) -> Response:
        return Response(campaign_detail(organization_campaign(request, campaign_id)))


class _CampaignActionApi(APIView):
    action = staticmethod(campaign_start)

    def post(self, request: Request, campaign_id: UUID) -> Response:
        campaign = self.action(campaign=organization_campaign(request, campaign_id))
        return Response(campaign_detail(campaign))


class CampaignStartApi(_CampaignActionApi):
    action = staticmethod(campaign_start)

    @openapi.campaign_action("start", detail=CampaignDetailSerializer)
    def post(self, request: Request, campaign_id: UUID) -> Response:
        return super().post(request, campaign_id)


class CampaignPauseApi(_CampaignActionApi):
    action = staticmethod(campaign_pause)

    @openapi.campaign_action("pause", detail=CampaignDetailSerializer)
    def post(self, request: Request, campaign_id: UUID) -> Response:
        return super().post(request, campaign_id)


class CampaignResumeApi(_CampaignActionApi):
    action = staticmethod(campaign_resume)

    @openapi.campaign_action("resume", detail=CampaignDetailSerializer)
    def post(self, request: Request, campaign_id: UUID) -> Response:
        return super().post(request, campaign_id)


class CampaignCancelApi(_CampaignActionApi):
    action = staticmethod(campaign_cancel)

    @openapi.campaign_action("cancel", detail=CampaignDetailSerializer)
    def post(self, request: Request, campaign_id: UUID) -> Response:
        return super().post(request, campaign_id)


@extend_schema_serializer(component_name="CampaignAttempt")
class AttemptSerializer(serializers.ModelSerializer):
    call_id = serializers.UUIDField(allow_null=True, read_only=True)
    call_status = serializers.CharField(source="call.status", allow_null=True, read_only=True)
    outcome = serializers.CharField(read_only=True, help_text=OUTCOME_HELP)

    class Meta:
        model = Attempt
        fields = ["number", "call_id", "call_status", "outcome", "started_at", "ended_at"]
        read_only_fields = fields


@extend_schema_serializer(component_name="CampaignRecipient")
class RecipientOutputSerializer(serializers.ModelSerializer):
    recipient_id = serializers.IntegerField(source="id", read_only=True)
    line = serializers.IntegerField(source="position", read_only=True)
    to_phone_number = serializers.CharField(source="to_number", read_only=True)
    time_zones = serializers.SerializerMethodField()
    outcome = serializers.CharField(read_only=True, help_text=OUTCOME_HELP)
    attempt_list = AttemptSerializer(source="attempt_set", many=True, read_only=True)

    class Meta:
        model = Recipient
        fields = [
            "recipient_id",
            "line",
            "to_phone_number",
            "variables",
            "metadata",
            "time_zones",
            "state",
            "outcome",
            "attempts",
            "next_attempt_at",
            "attempt_list",
        ]
        read_only_fields = fields

    def get_time_zones(self, recipient: Recipient) -> list[str]:
        return recipient.time_zones.split(",")


class RecipientPagination(CursorPagination):
    ordering = ("position",)
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                int(str(cursor.position))
            except ValueError:
                from rest_framework.exceptions import NotFound

                raise NotFound(self.invalid_cursor_message) from None
        return cursor


class CampaignRecipientsApi(APIView):
    """GET /campaigns/{id}/recipients?state=: its recipients in list order, with their attempts.
    POST: more recipients, as JSON (a list, or `{"recipients": [...]}`) or text/csv."""

    parser_classes = [JSONParser, CSVParser]
    pagination_class = RecipientPagination

    class FilterSerializer(serializers.Serializer):
        state = serializers.ChoiceField(
            choices=RecipientState.choices,
            required=False,
            error_messages={
                "invalid_choice": "state must be one of: " + ", ".join(RecipientState.values)
            },
        )

    @openapi.list_recipients(filters=FilterSerializer, item=RecipientOutputSerializer)
    def get(self, request: Request, campaign_id: UUID) -> Response:
        campaign = organization_campaign(request, campaign_id)
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        recipients = Recipient.objects.filter(campaign=campaign).prefetch_related(
            Prefetch("attempt_set", queryset=Attempt.objects.select_related("call"))
        )
        if filters.validated_data.get("state"):
            recipients = recipients.filter(state=filters.validated_data["state"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(recipients, request, view=self) or []
        return paginator.get_paginated_response(RecipientOutputSerializer(page, many=True).data)

    @openapi.add_recipients(row=RecipientRowSerializer)
    def post(self, request: Request, campaign_id: UUID) -> Response:
        campaign = organization_campaign(request, campaign_id)
        try:
            if isinstance(request.data, str):
                added = recipients_add_csv(campaign=campaign, text=request.data)
            else:
                rows = request.data
                if isinstance(rows, dict) and "recipients" in rows:
                    rows = rows["recipients"]
                if not isinstance(rows, list):
                    raise serializers.ValidationError({"recipients": ["recipients must be a list"]})
                added = recipients_add(campaign=campaign, rows=list(enumerate(rows, start=1)))
        except RecipientsInvalid as exc:
            return recipients_invalid_response(exc)
        return Response({"added": added}, status=status.HTTP_201_CREATED)


# ---- the do-not-call list ---------------------------------------------------------------------


@extend_schema_serializer(component_name="DoNotCallNumber")
class DoNotCallOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = DoNotCallNumber
        fields = ["number", "reason", "added_by", "added_at"]
        read_only_fields = fields


class DoNotCallPagination(NewestFirstCursorPagination):
    ordering = ("-added_at", "-id")
    items = "Numbers"


class DoNotCallListApi(APIView):
    """GET /do-not-call: the organization's list; POST: add a number."""

    @extend_schema_serializer(component_name="DoNotCallAdd")
    class InputSerializer(serializers.Serializer):
        number = E164Field(error_messages=e164_messages("number"))
        reason = StrictCharField(required=False, allow_blank=True, max_length=200)

    pagination_class = DoNotCallPagination

    @openapi.list_do_not_call(item=DoNotCallOutputSerializer)
    def get(self, request: Request) -> Response:
        entries = DoNotCallNumber.objects.filter(
            organization_id=request_api_key(request).organization_id
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self) or []
        return paginator.get_paginated_response(DoNotCallOutputSerializer(page, many=True).data)

    @openapi.add_do_not_call(request=InputSerializer, response=DoNotCallOutputSerializer)
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request_api_key(request)
        entry, created = do_not_call_add(
            organization_id=key.organization_id,
            number=serializer.validated_data["number"],
            added_by=f"API key {key.name}",
            reason=serializer.validated_data.get("reason", ""),
        )
        return Response(
            DoNotCallOutputSerializer(entry).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DoNotCallDetailApi(APIView):
    """DELETE /do-not-call/{number}: the number may be called again."""

    @openapi.remove_do_not_call()
    def delete(self, request: Request, number: str) -> Response:
        try:
            parsed = parse_e164(number)
        except ValueError:
            raise Http404 from None
        if not do_not_call_remove(
            organization_id=request_api_key(request).organization_id, number=parsed
        ):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)

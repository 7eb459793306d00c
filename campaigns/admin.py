"""Campaigns and the do-not-call list in the admin: through the same services as the API.

A campaign is created from an uploaded CSV (its bad rows named by line, nothing created while
any is bad), started, paused, resumed and canceled with buttons, and shows its progress, its
outcomes and its dials per minute (SVG drawn on the server). Recipients are searchable by number.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from assistants.models import Assistant
from burki.admin_tenancy import (
    MANAGED,
    OrganizationScopedAdmin,
    is_operator,
    organization_ids,
)
from burki.errors import DomainError
from burki.exceptions import first_error_message
from burki.models import Organization
from calls.do_not_call import do_not_call_import_csv
from calls.models import DoNotCallNumber
from calls.serializers import ON_MACHINE_CHOICES, VoicemailSerializer
from calls.services import Voicemail
from campaigns.errors import RecipientsInvalid
from campaigns.models import RETRYABLE, WEEKDAYS, Attempt, Campaign, Recipient
from campaigns.services import (
    CallingWindow,
    RetryRule,
    campaign_cancel,
    campaign_create,
    campaign_pause,
    campaign_progress,
    campaign_resume,
    campaign_start,
    recipients_add_csv,
)
from telephony.e164 import E164FormField
from telephony.models import PhoneNumber

CHART_MINUTES = 60
CHART_WIDTH, CHART_HEIGHT = 600, 100
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


def _user_label(request: HttpRequest) -> str:
    return f"admin user {request.user.get_username()}"


class CampaignCreateForm(forms.Form):
    organization = forms.ModelChoiceField(queryset=Organization.objects.none())
    name = forms.CharField(max_length=200)
    from_phone_numbers = forms.CharField(
        help_text="One or more of the organization's numbers, comma-separated, used in turn."
    )
    assistant = forms.ModelChoiceField(
        queryset=Assistant.objects.none(),
        required=False,
        help_text="Blank: the number's own assistant or flow.",
    )
    welcome_message = forms.CharField(
        widget=forms.Textarea, required=False, help_text="Blank: the assistant's greeting."
    )
    agenda = forms.CharField(widget=forms.Textarea, required=False)
    voicemail_on_machine = forms.ChoiceField(
        label="When a machine answers",
        choices=[("", "no answering-machine detection")]
        + [(choice, choice) for choice in ON_MACHINE_CHOICES],
        required=False,
        help_text="Ask who answers each call (not on BYO SIP trunk numbers): hang up, leave "
        "the message after the beep, or continue with the assistant. Either way the attempt "
        "ends 'machine'.",
    )
    voicemail_message = forms.CharField(
        label="Voicemail message",
        widget=forms.Textarea,
        required=False,
        strip=False,
        help_text="For leave_message only; {{variables}} from each row.",
    )
    calls_per_second = forms.DecimalField(
        initial=Decimal(1), min_value=Decimal("0.01"), max_value=Decimal(1000), decimal_places=2
    )
    max_concurrent_calls = forms.IntegerField(initial=10, min_value=1, max_value=10_000)
    window_start = forms.TimeField(required=False, help_text="e.g. 09:00, in each recipient's time")
    window_end = forms.TimeField(required=False, help_text="e.g. 20:00")
    window_days = forms.MultipleChoiceField(
        choices=[(day, day) for day in WEEKDAYS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every day.",
    )
    retry_max_attempts = forms.IntegerField(initial=1, min_value=1, max_value=10)
    retry_on = forms.MultipleChoiceField(
        choices=[(str(o), str(o)) for o in RETRYABLE],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    retry_backoff_seconds = forms.CharField(
        required=False, help_text="Seconds before each retry, comma-separated, e.g. 600,3600."
    )
    start_at = forms.DateTimeField(required=False, help_text="Blank: when it is started.")
    recipients = forms.FileField(
        help_text="CSV with a header row: to_phone_number, then one column per variable "
        "(and metadata.<key> columns)."
    )

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ids = None if is_operator(request) else organization_ids(request, MANAGED, "add")
        organizations = Organization.objects.all()
        assistants = Assistant.objects.all()
        if ids is not None:
            organizations = organizations.filter(pk__in=ids)
            assistants = assistants.filter(organization_id__in=ids)
        self.fields["organization"].queryset = organizations  # type: ignore[attr-defined]
        self.fields["assistant"].queryset = assistants  # type: ignore[attr-defined]

    def clean_from_phone_numbers(self) -> list[str]:
        field = E164FormField()
        return [
            field.clean(part.strip()) for part in self.cleaned_data["from_phone_numbers"].split(",")
        ]

    def clean_retry_backoff_seconds(self) -> list[int]:
        text = self.cleaned_data["retry_backoff_seconds"].strip()
        try:
            return [int(part) for part in text.split(",")] if text else []
        except ValueError:
            raise forms.ValidationError("Whole seconds, comma-separated.") from None

    def clean_recipients(self) -> str:
        upload = self.cleaned_data["recipients"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError("The file may be at most 5 MB.")
        try:
            return str(upload.read().decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise forms.ValidationError("The CSV must be UTF-8 text.") from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        organization = data.get("organization")
        numbers = data.get("from_phone_numbers") or []
        if organization is not None:
            found = {
                str(n.number): n
                for n in PhoneNumber.objects.filter(organization=organization, number__in=numbers)
            }
            missing = [n for n in numbers if n not in found]
            if missing:
                self.add_error(
                    "from_phone_numbers", f"Not numbers of {organization}: {', '.join(missing)}"
                )
            data["phone_numbers"] = [found[n] for n in numbers if n in found]
            assistant = data.get("assistant")
            if assistant is not None and assistant.organization_id != organization.pk:
                self.add_error("assistant", "The assistant must be the organization's.")
        if bool(data.get("window_start")) != bool(data.get("window_end")):
            self.add_error("window_end", "Give both ends of the window, or neither.")
        data["voicemail"] = self._voicemail(data)
        return data

    def _voicemail(self, data: dict[str, Any]) -> Voicemail | None:
        """The two fields checked as `POST /campaigns` checks its `voicemail`."""
        on_machine = data.get("voicemail_on_machine") or ""
        message = data.get("voicemail_message") or ""
        if not on_machine:
            if message:
                self.add_error("voicemail_message", "Choose what happens when a machine answers.")
            return None
        given: dict[str, Any] = {"on_machine": on_machine}
        if message:
            given["message"] = message
        checked = VoicemailSerializer(data=given)
        if not checked.is_valid():
            self.add_error("voicemail_message", first_error_message(checked.errors))
            return None
        return Voicemail.from_request(checked.validated_data)


def dials_per_minute_svg(campaign: Campaign) -> str:
    """The last hour's attempts per minute, as bars (one grouped query)."""
    now = timezone.now().replace(second=0, microsecond=0)
    since = now - timedelta(minutes=CHART_MINUTES - 1)
    counts = dict(
        Attempt.objects.filter(recipient__campaign=campaign, started_at__gte=since)
        .annotate(minute=TruncMinute("started_at"))
        .values_list("minute")
        .annotate(count=Count("id"))
        .values_list("minute", "count")
    )
    peak = max(counts.values(), default=0) or 1
    width = CHART_WIDTH / CHART_MINUTES
    bars = []
    for index in range(CHART_MINUTES):
        minute = since + timedelta(minutes=index)
        count = counts.get(minute, 0)
        height = CHART_HEIGHT * count / peak
        bars.append(
            (
                f"{index * width:.1f}",
                f"{CHART_HEIGHT - height:.1f}",
                f"{max(width - 1, 1):.1f}",
                f"{height:.1f}",
                f"{minute:%H:%M} UTC: {count} dials",
            )
        )
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}</title></rect>',
        bars,
    )
    return format_html(
        '<svg role="img" aria-label="Dials per minute, last hour" width="{}" height="{}" '
        'viewBox="0 0 {} {}" style="background:#f8f8f8">{}</svg>'
        "<div>Dials per minute over the last hour (peak {}).</div>",
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        rects,
        max(counts.values(), default=0),
    )


ACTIONS = {
    "start": campaign_start,
    "pause": campaign_pause,
    "resume": campaign_resume,
    "cancel": campaign_cancel,
}
# The buttons each status shows (the services still decide).
ACTIONS_IN = {
    "draft": ["start", "cancel"],
    "scheduled": ["pause", "cancel"],
    "running": ["pause", "cancel"],
    "paused": ["resume", "cancel"],
}


@admin.register(Campaign)
class CampaignAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    list_display = ["name", "organization", "status", "calls_per_second", "created_at"]
    list_filter = ["status", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "id"]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    fields = readonly_fields = (
        "organization",
        "name",
        "status",
        "progress",
        "outcomes",
        "dials_per_minute",
        "from_phone_numbers",
        "assistant",
        "welcome_message",
        "agenda",
        "answering_machines",
        "calls_per_second",
        "max_concurrent_calls",
        "window",
        "retry",
        "start_at",
        "created_at",
        "started_at",
        "ended_at",
    )

    @admin.display(description="Progress")
    def progress(self, obj: Campaign) -> str:
        figures = campaign_progress(campaign=obj)
        done = figures.by_state.get("done", 0) + figures.by_state.get("canceled", 0)
        percent = 100 * done / figures.total if figures.total else 0
        states = ", ".join(f"{state} {count}" for state, count in figures.by_state.items() if count)
        return format_html(
            '<progress max="100" value="{}" style="width:300px"></progress> {}% of {} '
            "recipients done<br>{}<br>{} dials in the last minute ({} a second; set {}); "
            "estimated end: {}",
            f"{percent:.0f}",
            f"{percent:.0f}",
            figures.total,
            states or "none yet",
            figures.dials_last_minute,
            figures.measured_calls_per_second,
            obj.calls_per_second,
            figures.estimated_end_at or "—",
        )

    @admin.display(description="Outcomes")
    def outcomes(self, obj: Campaign) -> str:
        figures = campaign_progress(campaign=obj)
        if not figures.by_outcome:
            return "none yet"
        rows: list[tuple[str, int]] = sorted(
            figures.by_outcome.items(), key=lambda row: row[1], reverse=True
        )
        return format_html_join(", ", "{}: {}", rows)

    @admin.display(description="Dials per minute")
    def dials_per_minute(self, obj: Campaign) -> str:
        return dials_per_minute_svg(obj)

    @admin.display(description="From numbers")
    def from_phone_numbers(self, obj: Campaign) -> str:
        return ", ".join(obj.from_numbers)

    @admin.display(description="Calling window")
    def window(self, obj: Campaign) -> str:
        if not obj.has_window:
            return "any time"
        days = ", ".join(obj.window_days) or "every day"
        return f"{obj.window_start:%H:%M} to {obj.window_end:%H:%M} local time, {days}"

    @admin.display(description="Answering machines")
    def answering_machines(self, obj: Campaign) -> str:
        voicemail = Voicemail.from_request(obj.voicemail)
        if voicemail is None:
            return "not detected"
        if voicemail.message:
            return f"detected: {voicemail.on_machine}: {voicemail.message}"
        return f"detected: {voicemail.on_machine}"

    @admin.display(description="Retry")
    def retry(self, obj: Campaign) -> str:
        if obj.retry_max_attempts <= 1 or not obj.retry_on:
            return "no retry"
        backoff = ", ".join(str(s) for s in obj.retry_backoff_seconds) or "60"
        return (
            f"up to {obj.retry_max_attempts} attempts on {', '.join(obj.retry_on)}, "
            f"after {backoff} s"
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page shows the campaign; it changes only through its buttons (the services).
        return False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        campaign = self.get_object(request, object_id)
        may = is_operator(request) or self.allowed(request, "change", campaign)
        extra_context = {
            **(extra_context or {}),
            "campaign_actions": ACTIONS_IN.get(campaign.status, []) if may else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<uuid:campaign_id>/run/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="campaigns_campaign_action",
            ),
            *super().get_urls(),
        ]

    def action_view(self, request: HttpRequest, campaign_id: Any, action: str) -> HttpResponse:
        campaign = self.get_object(request, str(campaign_id))
        if request.method != "POST" or action not in ACTIONS:
            raise PermissionDenied
        if not (is_operator(request) or self.allowed(request, "change", campaign)):
            raise PermissionDenied
        try:
            ACTIONS[action](campaign=campaign)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"{campaign}: {campaign.status}.")
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CampaignCreateForm(request.POST or None, request.FILES or None, request=request)
        row_errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            campaign = self._create(request, form, row_errors)
            if campaign is not None:
                self.message_user(request, f"{campaign}: created with its recipients (a draft).")
                return HttpResponseRedirect(
                    reverse("admin:campaigns_campaign_change", args=[campaign.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Add campaign from a CSV",
            "form": form,
            "row_errors": row_errors,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/add_from_csv.html", context)

    def _create(
        self, request: HttpRequest, form: CampaignCreateForm, row_errors: list[str]
    ) -> Campaign | None:
        data = form.cleaned_data
        window = (
            CallingWindow(data["window_start"], data["window_end"], list(data["window_days"]))
            if data.get("window_start")
            else None
        )
        try:
            with transaction.atomic():
                campaign = campaign_create(
                    organization=data["organization"],
                    name=data["name"],
                    phone_numbers=data["phone_numbers"],
                    assistant=data.get("assistant"),
                    welcome_message=data.get("welcome_message") or None,
                    agenda=data.get("agenda") or "",
                    calls_per_second=data["calls_per_second"],
                    max_concurrent_calls=data["max_concurrent_calls"],
                    window=window,
                    retry=RetryRule(
                        data["retry_max_attempts"],
                        list(data["retry_on"]),
                        data["retry_backoff_seconds"],
                    ),
                    start_at=data.get("start_at"),
                    voicemail=data.get("voicemail"),
                )
                recipients_add_csv(campaign=campaign, text=data["recipients"])
        except RecipientsInvalid as exc:
            row_errors.extend(f"line {row.line}: {row.reason}" for row in exc.rows)
            form.add_error("recipients", f"{len(exc.rows)} bad rows: nothing was created.")
            return None
        except DomainError as exc:
            form.add_error(None, exc.message)
            return None
        return campaign


@admin.register(Recipient)
class RecipientAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    organization_path = "campaign__organization"
    list_display = ["to_number", "campaign", "state", "outcome", "attempts", "next_attempt_at"]
    list_filter = ["state", "outcome"]
    list_select_related = ["campaign"]
    search_fields = ["to_number"]
    raw_id_fields = ["campaign", "last_call"]
    fields = readonly_fields = (
        "campaign",
        "position",
        "to_number",
        "variables",
        "metadata",
        "time_zones",
        "state",
        "outcome",
        "attempts",
        "next_attempt_at",
        "last_call",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DoNotCallImportForm(forms.Form):
    organization = forms.ModelChoiceField(queryset=Organization.objects.none())
    file = forms.FileField(help_text="CSV with a header row naming `number` (and `reason`).")


@admin.register(DoNotCallNumber)
class DoNotCallNumberAdmin(OrganizationScopedAdmin):
    rights = MANAGED
    list_display = ["number", "organization", "reason", "added_by", "added_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["number", "reason", "added_by"]
    fields = ["organization", "number", "reason"]
    readonly_fields = ["added_by", "added_at"]
    change_list_template = "admin/calls/donotcallnumber/change_list.html"

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "number":
            return E164FormField(label="Number", help_text="E.164, e.g. +15551234567.")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.added_by = _user_label(request)
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="calls_donotcallnumber_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = DoNotCallImportForm(request.POST or None, request.FILES or None)
        ids = None if is_operator(request) else organization_ids(request, MANAGED, "add")
        organizations = Organization.objects.all()
        if ids is not None:
            organizations = organizations.filter(pk__in=ids)
        form.fields["organization"].queryset = organizations  # type: ignore[attr-defined]
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                text = form.cleaned_data["file"].read().decode("utf-8-sig")
            except UnicodeDecodeError:
                errors = ["The CSV must be UTF-8 text."]
            else:
                report = do_not_call_import_csv(
                    organization_id=form.cleaned_data["organization"].pk,
                    text=text,
                    added_by=f"CSV import by {request.user.get_username()}",
                )
                errors = report.errors
                if not errors:
                    self.message_user(
                        request,
                        f"{report.added} numbers added, {report.already_listed} already listed.",
                    )
                    return HttpResponseRedirect(reverse("admin:calls_donotcallnumber_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import do-not-call numbers",
            "form": form,
            "row_errors": errors,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/calls/donotcallnumber/import.html", context)

"""Provider webhooks. Each URL names our call id (we put it there when placing the call), so a
call is found by that id and never guessed from numbers; the provider verifies the signature
with the credentials the call was placed with, and the event goes through `call_apply_event`."""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings
from django.http import HttpResponse
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.models import Call, Settlement
from calls.selectors import call_for_webhook, call_sid_taken
from calls.services import (
    call_answer_for_machine,
    call_apply_detection,
    call_apply_event,
    call_context,
)
from telephony.models import provider_credentials
from telephony.providers import get_provider
from telephony.providers.base import Provider, WebhookRejected, WebhookRequest

logger = logging.getLogger(__name__)


class RawBodyParser(BaseParser):
    """Accept any body; the provider reads `request.body` (signatures cover the raw bytes)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        return {}


class WebhookApi(APIView):
    # Provider-facing (the provider signs each request with its own scheme): not part of the
    # public API schema.
    schema = None
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawBodyParser]

    def verified(self, request: Request, call_id: UUID) -> tuple[Call, Provider] | None:
        call = call_for_webhook(call_id=call_id)
        if call is None:
            return None
        provider = get_provider(call.provider)
        django_request = request._request
        webhook = WebhookRequest(
            # What we gave the provider, not what a proxy in front of us reports.
            url=settings.PUBLIC_BASE_URL + django_request.get_full_path(),
            method=django_request.method or "POST",
            headers=django_request.headers,
            body=django_request.body,
            # A GET's parameters are part of the URL, which the signature already covers.
            form=django_request.POST if django_request.method == "POST" else {},
        )
        account = provider_credentials(call.provider_account)
        try:
            provider.verify_webhook(webhook, account)
        except WebhookRejected as exc:
            logger.warning("rejected %s webhook for call %s: %s", provider.name, call_id, exc)
            raise exceptions.PermissionDenied("Invalid webhook signature.") from None
        self.webhook = webhook
        return call, provider


class CallAnswerWebhookApi(WebhookApi):
    """The provider asks what to do with the answered call: hand it to the assistant."""

    def post(self, request: Request, call_id: UUID) -> HttpResponse:
        found = self.verified(request, call_id)
        if found is None:
            raise exceptions.NotFound("Unknown call.")
        call, provider = found
        if call.is_final:
            # Over by our books (failed, settled, hung up): it must not reach the assistant.
            logger.warning("answer webhook for %s call %s: hanging up", call.status, call.pk)
            answer = provider.answer_with_hangup()
        else:
            # A machine already known to have answered reaches the assistant only if the call
            # said so (voicemail.on_machine "continue").
            answer = call_answer_for_machine(call=call, provider=provider) or provider.answer(
                call_context(call), settings.MEDIA_STREAM_URL
            )
        return HttpResponse(answer.body, content_type=answer.content_type)

    get = post


class CallStatusWebhookApi(WebhookApi):
    """Lifecycle events. Always acknowledged once verified: providers retry anything else."""

    def post(self, request: Request, call_id: UUID) -> Response:
        found = self.verified(request, call_id)
        if found is None:
            logger.info("status webhook for unknown call %s ignored", call_id)
            return Response({"detail": "Ignored: unknown call."})
        call, provider = found
        event = provider.parse_status(self.webhook)
        if event is None:
            return self.detection(call, provider)
        if self.another_leg(call, provider, event.provider_call_id):
            return Response({"detail": "Ignored: an event for another leg of the call."})
        if (
            event.provider_call_id
            and not call.call_sid
            and call_sid_taken(provider=call.provider, call_sid=event.provider_call_id)
        ):
            # A call we never learned the id of is adopted by its first event, but not with the
            # id of another of ours: a real provider never reuses one, so this one is made up.
            logger.warning("%s event naming another call's id for call %s", provider.name, call.pk)
            return Response({"detail": "Ignored: that provider call is another call's."})
        # Signed with a secret the organization holds: the bill comes from the provider's own
        # record, not from what the webhook says.
        applied = call_apply_event(
            call=call,
            event=event,
            source=provider.name,
            settled_by=Settlement.WEBHOOK,
            defer_settlement=provider.account_can_forge_webhooks and provider.can_fetch_calls,
        )
        if call.voicemail is not None and provider.can_detect_machines:
            # A lifecycle event may carry the verdict too (Twilio's AnsweredBy can ride on a
            # status callback): it is applied after the change of status it came with.
            detection = provider.parse_detection(self.webhook)
            if detection is not None:
                call_apply_detection(call=call, event=detection, source=provider.name)
        return Response({"detail": "Applied." if applied else "Ignored: already applied."})

    def detection(self, call: Call, provider: Provider) -> Response:
        """An answering-machine detection result (on the status URL for every provider: Twilio's
        AsyncAmdStatusCallback, Telnyx's and Vonage's events)."""
        detection = provider.parse_detection(self.webhook) if provider.can_detect_machines else None
        if detection is None:
            return Response({"detail": "Ignored: no lifecycle change."})
        if self.another_leg(call, provider, detection.provider_call_id):
            return Response({"detail": "Ignored: an event for another leg of the call."})
        return Response(
            {"detail": call_apply_detection(call=call, event=detection, source=provider.name)}
        )

    @staticmethod
    def another_leg(call: Call, provider: Provider, provider_call_id: str) -> bool:
        if provider_call_id and call.call_sid and provider_call_id != call.call_sid:
            # Another leg of the same call (a connected websocket, a transfer): not its lifecycle.
            logger.info("%s event for another leg of call %s ignored", provider.name, call.pk)
            return True
        return False

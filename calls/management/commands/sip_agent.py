"""`manage.py sip_agent`: telephony.sip.agent, given what it may do with calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls.models import Call, Settlement
from calls.services import call_apply_event, call_heard_from
from telephony.providers.base import StatusEvent
from telephony.sip import agent
from telephony.states import CallState


def report(call_id: str, event: StatusEvent) -> agent.Recorded:
    call = Call.objects.filter(pk=call_id).first()
    if call is None:
        return agent.Recorded.UNKNOWN
    if call_apply_event(call=call, event=event, source="sip", settled_by=Settlement.AGENT):
        return agent.Recorded.APPLIED
    if event.state in (CallState.RINGING, CallState.IN_PROGRESS):
        call.refresh_from_db(fields=["status"])
        if call.is_final:
            return agent.Recorded.CLOSED
    return agent.Recorded.DUPLICATE


def may_dial(call_id: str) -> int | None:
    return (
        Call.objects.filter(pk=call_id, provider="sip", status=CallState.QUEUED)
        .values_list("organization_id", flat=True)
        .first()
    )


def heard_from(call_ids: list[str], at: datetime) -> None:
    call_heard_from(call_ids=call_ids, at=at)


class Command(BaseCommand):
    help = (
        "Run a SIP agent: dials BYO SIP trunk calls on request from web workers (loopback "
        "control channel), bridges their audio to the media stream, records every call's "
        "lifecycle. --processes N runs N SIP engines behind one control address."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        agent.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        calls = agent.Calls(report=report, may_dial=may_dial, heard_from=heard_from)
        try:
            agent.run(agent.options_from(options), calls, ready=self.stdout.write)
        except agent.AgentConfigError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("sip agent stopped")

"""BYO SIP trunk: the organization's own carrier or PBX, spoken to by our own SIP stack.

This module runs in web workers and never loads the SIP stack: it asks a `manage.py sip_agent`
process over the loopback control channel (telephony.sip.control) to dial. The agent picks the
organization's trunks, sends the INVITE, answers with its SIP Call-ID (our call_sid), bridges the
answered call's audio to the assistant's media stream, and from then on reports the call's states
itself; SIP has no webhooks.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings

from telephony.providers.base import (
    Account,
    CallContext,
    CallRecordQuery,
    OutboundCall,
    PlacedCallQuery,
    Provider,
    ProviderError,
    StatusEvent,
    WebhookAnswer,
    WebhookRejected,
    WebhookRequest,
)
from telephony.sip import control, protocol
from telephony.sip.protocol import CALLS_PER_ENGINE, ErrorCode

logger = logging.getLogger(__name__)


class SipProvider(Provider):
    # The credentials live on the organization's SipTrunks, which the agent reads.
    account_optional = True
    can_find_calls = True
    can_fetch_calls = True
    can_hang_up = True
    # A cold transfer is a SIP REFER to the callee, through the call's own trunk.
    can_transfer = True
    # The agent reports each call's states through the calls services.
    sends_webhooks = False
    # Each agent stamps its calls every SIP_AGENT_HEARTBEAT_SECONDS.
    reports_liveness = True

    def place_call(self, call: OutboundCall, account: Account) -> str:
        answer = self.answer(call.context, call.media_stream_url)
        media = json.loads(answer.body)
        message = protocol.Dial(
            call_id=call.call_id,
            from_number=call.from_number,
            to_number=call.to_number,
            time_limit_seconds=call.time_limit_seconds,
            ring_timeout_seconds=call.ring_timeout_seconds,
            media=protocol.MediaTarget(media["stream_url"], media["parameters"]),
        )
        full = refused = 0
        for address in settings.SIP_AGENTS:
            try:
                reply = control.ask(address, message, timeout=settings.SIP_AGENT_TIMEOUT_SECONDS)
            except (control.AgentUnreachable, protocol.ProtocolError) as exc:
                logger.warning("sip agent %s unreachable: %s", address, exc)
                continue
            except control.AgentTimedOut as exc:
                # Not retried elsewhere: this agent may have dialled already.
                raise ProviderError(
                    "The SIP agent did not answer in time; it may have placed the call.",
                    timeout=True,
                ) from exc
            if isinstance(reply, protocol.Dialled):
                return reply.call_sid
            if isinstance(reply, protocol.Failure) and reply.code is ErrorCode.FULL:
                full += 1
                continue
            if isinstance(reply, protocol.Failure) and reply.code is ErrorCode.UNAUTHORIZED:
                logger.error("sip agent %s refused our SIP_AGENT_SECRET", address)
                refused += 1
                continue
            detail = reply.detail if isinstance(reply, protocol.Failure) else ""
            raise ProviderError(detail or "The SIP agent refused the call.")
        if full:
            raise ProviderError(
                "Every SIP agent is carrying all the calls it can "
                f"({CALLS_PER_ENGINE} per engine process); try again shortly.",
                unavailable=True,
            )
        if refused:
            raise ProviderError(
                "No SIP agent accepted this server's credentials.", unavailable=True
            )
        raise ProviderError("No SIP agent is running to place the call.", unavailable=True)

    def find_calls(self, query: PlacedCallQuery, account: Account) -> list[StatusEvent]:
        """Asks every agent whether it is placing the call. The agents report a call's states
        themselves from the first 180 on, so one still `queued` is only ever one being dialled
        right now or one never dialled."""
        return self._ask_agents(query.call_id)

    def fetch_call(self, query: CallRecordQuery, account: Account) -> StatusEvent | None:
        """The agent carrying the call says where it is; no agent carrying it means no record
        (its agent stopped, or the end was reported and lost), which the sweep settles by its
        rule once the call is long over."""
        found = self._ask_agents(query.call_id)
        return found[0] if found else None

    def hang_up(
        self, query: CallRecordQuery, account: Account, *, answered: bool
    ) -> StatusEvent | None:
        """Every agent is asked; the one carrying the call sends its BYE (or CANCEL while it
        rings) and reports the end as it does for any call."""
        ended = False
        for reply in self._ask_each(protocol.HangUp(call_id=query.call_id)):
            ended |= isinstance(reply, protocol.Done)
        if not ended:
            raise ProviderError("No SIP agent is carrying the call.")
        return None  # the agent reports the end

    def transfer(self, query: CallRecordQuery, account: Account, *, to_number: str) -> None:
        """The agent carrying the call sends REFER and answers once the far end has accepted
        it; the call then ends (`transferred to ...`) when the new call is up."""
        refused = ""
        for reply in self._ask_each(protocol.Transfer(call_id=query.call_id, to_number=to_number)):
            if isinstance(reply, protocol.Done):
                return
            if isinstance(reply, protocol.Failure) and reply.code is not ErrorCode.NOT_CARRIED:
                refused = reply.detail
        raise ProviderError(refused or "No SIP agent is carrying the call.")

    def _ask_agents(self, call_id: str) -> list[StatusEvent]:
        found: list[StatusEvent] = []
        for address, reply in zip(
            settings.SIP_AGENTS, self._ask_each(protocol.Find(call_id=call_id)), strict=True
        ):
            if not isinstance(reply, protocol.Found):
                raise ProviderError(f"SIP agent {address} could not be asked.")
            found += [
                StatusEvent(state=c.state, provider_call_id=c.sip_call_id) for c in reply.calls
            ]
        return found

    def _ask_each(self, message: protocol.Request) -> list[protocol.Reply]:
        replies = []
        for address in settings.SIP_AGENTS:
            try:
                replies.append(
                    control.ask(address, message, timeout=settings.SIP_AGENT_TIMEOUT_SECONDS)
                )
            except (control.AgentUnreachable, control.AgentTimedOut, protocol.ProtocolError) as exc:
                raise ProviderError(f"SIP agent {address} could not be asked.") from exc
        return replies

    def verify_webhook(self, request: WebhookRequest, account: Account) -> None:
        # The agent reports through the calls services directly; nobody may speak for it by HTTP.
        raise WebhookRejected("SIP calls send no webhooks.")

    def parse_status(self, request: WebhookRequest) -> StatusEvent | None:
        return None

    def answer(self, context: CallContext, media_stream_url: str) -> WebhookAnswer:
        body = {"stream_url": media_stream_url, "parameters": context.as_parameters()}
        return WebhookAnswer(body=json.dumps(body), content_type="application/json")

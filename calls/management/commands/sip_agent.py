"""`manage.py sip_agent`: the long-lived process that places BYO SIP trunk calls.

Three kinds of thread, each with one job: the main thread owns PJSIP (telephony.sip_agent); the
control server's threads parse dial/hang-up requests and read the database; one reporter thread
writes what the SIP side learned through the same calls services the providers' webhooks use,
so a slow database never stalls SIP and events reach a call in the order they happened.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from calls.models import Call, Settlement
from calls.services import call_apply_event, call_heard_from
from telephony import sip_control
from telephony.models import SipTrunk
from telephony.providers.base import StatusEvent
from telephony.selectors import sip_trunks_for_organization, sip_trunks_registering
from telephony.sip_numbers import parse_gateway
from telephony.states import CallState

logger = logging.getLogger("telephony.sip_agent")

RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


def _trunk_targets(trunks: Iterable[SipTrunk]) -> tuple[Any, ...]:
    from telephony.sip_agent import TrunkTarget

    targets = []
    for trunk in trunks:
        host, port = parse_gateway(trunk.gateway)
        targets.append(
            TrunkTarget(
                id=trunk.pk,
                name=trunk.name,
                host=host,
                port=port,
                transport=trunk.transport,
                username=trunk.username,
                password=trunk.password,
                caller_id_format=trunk.caller_id_format,
            )
        )
    return tuple(targets)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """The calls the agent carried at `at`: each was up then."""

    call_ids: list[str]
    at: datetime


class Reporter:
    """Applies the agent's events to calls, one at a time, off the SIP thread."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.events: queue.SimpleQueue[tuple[str, StatusEvent] | Heartbeat | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._run, name="sip-reporter", daemon=True)

    def report(self, call_id: str, event: StatusEvent) -> None:
        self.events.put((call_id, event))

    def alive(self, call_ids: list[str]) -> None:
        self.events.put(Heartbeat(call_ids=call_ids, at=timezone.now()))

    def _run(self) -> None:
        while (item := self.events.get()) is not None:
            if isinstance(item, Heartbeat):
                self._stamp(item)
                continue
            call_id, event = item
            # A final event settles the money: ride out a database restart rather than lose it.
            for delay in RETRY_DELAYS:
                try:
                    self.apply(call_id, event)
                    break
                except (OperationalError, InterfaceError) as exc:
                    logger.warning("database unavailable (%s); retrying in %s s", exc, delay)
                    connection.close()
                    time.sleep(delay)
                except Exception:
                    logger.exception("recording %s for call %s failed", event.state, call_id)
                    break
                finally:
                    close_old_connections()
            else:
                logger.error("gave up recording %s for call %s", event.state, call_id)
        connection.close()

    def _stamp(self, beat: Heartbeat) -> None:
        # One try: the next heartbeat follows in a few seconds, and a database that is down
        # must not hold back the events queued behind it.
        try:
            call_heard_from(call_ids=beat.call_ids, at=beat.at)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("heartbeat of %s calls not recorded: %s", len(beat.call_ids), exc)
            connection.close()
        except Exception:
            logger.exception("heartbeat of %s calls not recorded", len(beat.call_ids))
        finally:
            close_old_connections()

    def apply(self, call_id: str, event: StatusEvent) -> str:
        """Record one event on its call; says what became of it, in the webhooks' words."""
        call = Call.objects.filter(pk=call_id).first()
        if call is None:
            logger.warning("event for unknown call %s dropped", call_id)
            return "Ignored: unknown call."
        applied = call_apply_event(
            call=call, event=event, source="sip", settled_by=Settlement.AGENT
        )
        if not applied and event.state in (CallState.RINGING, CallState.IN_PROGRESS):
            call.refresh_from_db(fields=["status"])
            if call.is_final:
                # Nobody will pay for this call any more (it failed or ended on our side,
                # e.g. the web worker gave up waiting): do not let it run on the trunk.
                self.agent.submit(lambda: self.agent.hangup(call_id, "the call was closed"))
        return "Applied." if applied else "Ignored: already applied."

    def stop(self) -> None:
        self.events.put(None)
        self.thread.join(timeout=30)


def keep_registrations(agent: Any, stop: threading.Event, interval: float) -> None:
    """Register the trunks that ask for it, picking up admin changes every `interval` s."""
    while True:
        try:
            targets = _trunk_targets(sip_trunks_registering())
            agent.submit(lambda targets=targets: agent.sync_registrations(targets))
        except Exception:
            logger.exception("reading the registering trunks failed")
        finally:
            close_old_connections()
        if stop.wait(interval):
            connection.close()
            return


class Command(BaseCommand):
    help = (
        "Run a SIP agent: owns the SIP stack, dials BYO SIP trunk calls on request from web "
        "workers (loopback control channel) and records every call's lifecycle. One process "
        "carries at most 4 simultaneous calls; run several, each listed in SIP_AGENTS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--control",
            default=settings.SIP_AGENTS[0] if settings.SIP_AGENTS else "127.0.0.1:5070",
            help="host:port of the control channel (loopback; default: the first SIP_AGENTS).",
        )
        parser.add_argument(
            "--sip", default="0.0.0.0:5060", help="host:port for SIP over UDP and TCP."
        )
        parser.add_argument("--public-host", default="", help="Address to advertise (NAT).")
        parser.add_argument("--rtp-port", type=int, default=4000, help="First RTP port.")
        parser.add_argument(
            "--trunk-response-timeout",
            type=float,
            default=5.0,
            help="Seconds to wait for any answer from a trunk before trying the next one.",
        )
        parser.add_argument(
            "--registration-refresh",
            type=float,
            default=60.0,
            help="Seconds between re-reading which trunks register.",
        )
        parser.add_argument(
            "--pjsip-log-level", type=int, default=1, help="PJSIP's own log level (0-6)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from telephony.sip_agent import SipAgent

        control_host, control_port = sip_control.parse_address(options["control"])
        if control_host not in ("127.0.0.1", "::1", "localhost"):
            raise CommandError("The control channel listens on loopback only.")
        sip_host, sip_port = sip_control.parse_address(options["sip"])

        stop = threading.Event()
        reporter = Reporter(agent=None)
        agent = SipAgent(
            report=reporter.report,
            alive=reporter.alive,
            heartbeat_seconds=settings.SIP_AGENT_HEARTBEAT_SECONDS,
            sip_host=sip_host,
            sip_port=sip_port,
            rtp_port=options["rtp_port"],
            public_host=options["public_host"],
            log_level=options["pjsip_log_level"],
            trunk_response_timeout=options["trunk_response_timeout"],
        )
        reporter.agent = agent
        agent.start()
        try:
            server = sip_control.ControlServer(
                options["control"],
                lambda payload: self._handle(agent, payload),
                sip_control.control_secret(),
            )
        except OSError as exc:
            raise CommandError(f"Cannot listen on {options['control']}: {exc}") from exc
        reporter.thread.start()
        server.start()
        threading.Thread(
            target=keep_registrations,
            args=(agent, stop, options["registration_refresh"]),
            name="sip-registrations",
            daemon=True,
        ).start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(
            f"sip agent ready: control {control_host}:{control_port}, SIP {sip_host}:{sip_port}",
        )
        self.stdout.flush()
        try:
            agent.run(stop)
        finally:
            server.shutdown()
            server.server_close()
            reporter.stop()
        self.stdout.write("sip agent stopped")

    def _handle(self, agent: Any, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            if payload.get("op") == "dial":
                return self._dial(agent, payload)
            if payload.get("op") == "hangup":
                call_id = str(payload.get("call_id", ""))
                future = agent.submit(lambda: agent.hangup(call_id, "hung up on request"))
                return {"ok": bool(future.result(timeout=settings.SIP_AGENT_TIMEOUT_SECONDS))}
            if payload.get("op") == "find":
                call_id = str(payload.get("call_id", ""))
                future = agent.submit(lambda: agent.find(call_id))
                return {"ok": True, "calls": future.result(timeout=5)}
            if payload.get("op") == "status":
                future = agent.submit(lambda: agent.live_calls)
                return {"ok": True, "calls": future.result(timeout=5)}
            return {"ok": False, "error": "bad_request", "detail": "Unknown op."}
        except Exception:
            # Answer anyway: a silent agent would make the caller try the next one.
            logger.exception("control request %s failed", payload.get("op"))
            return {"ok": False, "error": "internal", "detail": "The SIP agent failed."}
        finally:
            connection.close()

    def _dial(self, agent: Any, payload: dict[str, Any]) -> dict[str, Any]:
        from telephony.sip_agent import AgentFull, AgentStopping, DialRefused, DialRequest

        try:
            request = DialRequest(
                call_id=str(payload["call_id"]),
                from_number=str(payload["from_number"]),
                to_number=str(payload["to_number"]),
                time_limit_seconds=int(payload["time_limit_seconds"]),
                ring_timeout_seconds=int(payload["ring_timeout_seconds"]),
                trunks=(),
                media=dict(payload.get("media") or {}),
            )
        except (KeyError, TypeError, ValueError):
            return {"ok": False, "error": "bad_request", "detail": "Malformed dial request."}
        # Only a call that is ours to place right now: a SIP call still queued.
        call = Call.objects.filter(
            pk=request.call_id, provider="sip", status=CallState.QUEUED
        ).first()
        if call is None:
            return {"ok": False, "error": "unknown_call", "detail": "No such call to place."}
        trunks = _trunk_targets(sip_trunks_for_organization(organization_id=call.organization_id))
        if not trunks:
            detail = "The organization has no enabled SIP trunk."
            return {"ok": False, "error": "no_trunk", "detail": detail}
        request = dataclasses.replace(request, trunks=trunks)
        future = agent.submit(lambda: agent.dial(request))
        try:
            try:
                sip_call_id = future.result(timeout=settings.SIP_AGENT_TIMEOUT_SECONDS)
            except TimeoutError:
                if future.cancel():  # never started: nothing was dialled
                    return {"ok": False, "error": "full", "detail": "This SIP agent is busy."}
                sip_call_id = future.result()  # started: its outcome is moments away
        except AgentFull:
            return {"ok": False, "error": "full", "detail": "This SIP agent is full."}
        except AgentStopping as exc:
            return {"ok": False, "error": "full", "detail": str(exc)}
        except DialRefused as exc:
            return {"ok": False, "error": "refused", "detail": str(exc)}
        return {"ok": True, "call_sid": sip_call_id}

"""What only Telnyx does: hangup causes, machine detection, its retries (the rest is in
test_provider_conformance)."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from billing.models import LedgerEntry
from calls.models import Call, CallEvent
from calls.services import calls_sweep
from tests.conftest import Tenant, assert_money_consistent
from tests.test_provider_conformance import (
    TELNYX_CALLS,
    TelnyxDriver,
    Webhook,
    initiate,
    signed,
)

telnyx = TelnyxDriver()


@pytest.fixture
def placed(tenant: Tenant) -> Call:
    telnyx.number(tenant)
    with telnyx.wire() as wire:
        telnyx.accept(wire)
        response = initiate(tenant)
    return Call.objects.get(pk=response.json()["call_id"])


def hangup(call: Call, cause: str, sip: str, *, seconds: int = 0) -> Webhook:
    webhook = telnyx.event(call, "completed", duration=seconds)
    envelope = json.loads(webhook.body)
    envelope["data"]["payload"].update(hangup_cause=cause, sip_hangup_cause=sip)
    return Webhook(body=json.dumps(envelope).encode(), content_type="application/json")


@pytest.mark.parametrize(
    ("cause", "sip", "status", "reason"),
    [
        ("user_busy", "486", "busy", "user_busy (SIP 486)"),
        ("timeout", "487", "no-answer", "timeout (SIP 487)"),
        ("no_answer", "480", "no-answer", "no_answer (SIP 480)"),
        ("originator_cancel", "487", "canceled", "originator_cancel (SIP 487)"),
        ("call_rejected", "603", "failed", "call_rejected (SIP 603)"),
        ("not_found", "404", "failed", "not_found (SIP 404)"),
        ("unspecified", "unspecified", "failed", "unspecified"),
        ("a_cause_telnyx_adds_later", "503", "failed", "a_cause_telnyx_adds_later (SIP 503)"),
    ],
)
def test_a_hangup_before_answer_ends_the_call_by_its_cause_and_costs_nothing(
    client, tenant: Tenant, placed: Call, cause: str, sip: str, status: str, reason: str
) -> None:
    path = f"/webhooks/calls/{placed.pk}/status"

    response = signed(client, telnyx, path, hangup(placed, cause, sip, seconds=12))

    assert response.json() == {"detail": "Applied."}
    placed.refresh_from_db()
    assert (placed.status, placed.end_reason, placed.cost_cents) == (status, reason, 0)
    assert CallEvent.objects.get(call=placed).detail == {
        "event_type": "call.hangup",
        "hangup_cause": cause,
        "hangup_source": "callee",
        "sip_hangup_cause": sip,
    }
    assert_money_consistent(tenant.organization)


def test_a_call_cut_by_our_time_limit_is_charged_up_to_the_limit(
    client, tenant: Tenant, placed: Call
) -> None:
    path = f"/webhooks/calls/{placed.pk}/status"
    signed(client, telnyx, path, telnyx.event(placed, "in-progress"))

    response = signed(client, telnyx, path, hangup(placed, "time_limit", "200", seconds=600))

    assert response.json() == {"detail": "Applied."}
    placed.refresh_from_db()
    # The whole hold: 600 s at 10 cents a minute.
    assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 600, 100)
    assert_money_consistent(tenant.organization)


def test_a_machine_detection_result_for_a_call_that_did_not_ask_changes_nothing(
    client, placed: Call
) -> None:
    body = {
        "data": {
            "event_type": "call.machine.detection.ended",
            "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "occurred_at": "2026-01-05T09:30:05Z",
            "payload": {"call_control_id": telnyx.call_control_id, "result": "machine"},
            "record_type": "event",
        }
    }
    webhook = Webhook(body=json.dumps(body).encode(), content_type="application/json")

    response = signed(client, telnyx, f"/webhooks/calls/{placed.pk}/status", webhook)

    assert response.json() == {"detail": "Ignored: the call did not ask for machine detection."}
    placed.refresh_from_db()
    assert (placed.status, placed.answered_by) == ("initiated", None)
    assert CallEvent.objects.count() == 0


def test_a_signed_body_that_is_not_an_event_is_acknowledged_and_ignored(
    client, placed: Call
) -> None:
    webhook = Webhook(body=b"not json", content_type="application/json")

    response = signed(client, telnyx, f"/webhooks/calls/{placed.pk}/status", webhook)

    assert response.json() == {"detail": "Ignored: no lifecycle change."}
    placed.refresh_from_db()
    assert placed.status == "initiated"


def test_a_rate_limited_dial_is_retried_once_without_waiting_the_minute_asked(
    tenant: Tenant, monkeypatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("telnyx._base_client.time.sleep", pauses.append)
    telnyx.number(tenant)
    with telnyx.wire() as wire:
        route = wire.mock.post(TELNYX_CALLS)
        route.side_effect = [
            telnyx_response(429, {"errors": [{"title": "Too many requests"}]}, retry_after="60"),
            telnyx_response(200, {"data": {"call_control_id": telnyx.call_control_id}}),
        ]
        response = initiate(tenant)

    assert response.status_code == 200
    assert response.json()["call_sid"] == telnyx.call_control_id
    assert len(pauses) == 1 and 0 < pauses[0] <= 1.0
    first, second = wire.sent
    # The same command_id twice: Telnyx places the call once.
    assert json.loads(first.content) == json.loads(second.content)


def telnyx_response(status: int, body: dict, *, retry_after: str = "") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(status, json=body, headers=headers)


def test_a_body_that_is_not_utf8_is_a_403(client, tenant: Tenant, placed: Call) -> None:
    webhook = Webhook(body=b"\xff\xfe not text", content_type="application/json")

    response = signed(client, telnyx, f"/webhooks/calls/{placed.pk}/status", webhook)

    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Invalid webhook signature."},
    )
    placed.refresh_from_db()
    assert placed.status == "initiated"


class TestTalkTimeWhateverTheOrder:
    """Telnyx reports no duration: talk time runs from call.answered to call.hangup, which may
    be processed in either order (retries, two workers), or call.answered may be lost."""

    def test_a_hangup_before_its_answer_is_settled_when_the_answer_arrives(
        self, client, tenant: Tenant, placed: Call
    ) -> None:
        path = f"/webhooks/calls/{placed.pk}/status"
        ended = signed(client, telnyx, path, telnyx.event(placed, "completed", duration=125))
        placed.refresh_from_db()
        assert ended.json() == {"detail": "Applied."}
        assert (placed.status, placed.cost_cents, placed.settled_by) == ("completed", None, None)
        assert_money_consistent(tenant.organization)  # still held: the talk time is unknown

        answered = signed(client, telnyx, path, telnyx.event(placed, "in-progress"))
        again = signed(client, telnyx, path, telnyx.event(placed, "in-progress"))

        assert answered.json() == {"detail": "Applied."}
        assert again.json() == {"detail": "Ignored: already applied."}
        placed.refresh_from_db()
        assert (placed.status, placed.duration_seconds, placed.cost_cents) == ("completed", 125, 21)
        assert placed.settled_by == "webhook"
        assert (
            LedgerEntry.objects.filter(call_id=placed.pk, kind="charge").get().amount_cents == -21
        )
        assert list(CallEvent.objects.filter(call=placed).values_list("status", flat=True)) == [
            "completed",
            "in-progress",
        ]
        assert_money_consistent(tenant.organization)

    def test_a_lost_answer_is_charged_from_the_dial_to_the_end_by_the_sweep(
        self, client, tenant: Tenant, placed: Call
    ) -> None:
        path = f"/webhooks/calls/{placed.pk}/status"
        signed(client, telnyx, path, telnyx.event(placed, "completed", duration=125))
        placed.refresh_from_db()
        assert placed.ended_at is not None
        Call.objects.filter(pk=placed.pk).update(
            initiated_at=placed.ended_at - timedelta(seconds=200)
        )

        report = calls_sweep()

        assert report.estimated == 1
        placed.refresh_from_db()
        # 200 s (ringing included: the most it can have talked) at 10 cents a minute.
        assert (placed.duration_seconds, placed.cost_cents, placed.settled_by) == (
            200,
            34,
            "estimate",
        )
        assert_money_consistent(tenant.organization)
        assert calls_sweep().estimated == 0  # settled once


def test_a_process_keeps_as_many_connections_to_telnyx_as_its_threads_place_calls(
    settings,
) -> None:
    """32 requests at once, then 32 more, through the process's one client (a local server
    holds each round until all have arrived): the second round reuses the first's 32
    connections. With the SDK's own pool (20 kept) it opened 12 new ones."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from telephony.providers import telnyx as adapter

    threads = settings.PROVIDER_HTTP_POOL_SIZE
    peers: set[tuple[str, int]] = set()
    arrived = threading.Barrier(threads, timeout=10)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            peers.add(self.client_address)
            arrived.wait()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    adapter._http_client.cache_clear()
    client = adapter._http_client()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/calls"
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in range(2):
                answers = list(pool.map(lambda _: client.get(url).status_code, range(threads)))
                assert answers == [200] * threads
                arrived.reset()
    finally:
        server.shutdown()
        server.server_close()
        client.close()
        adapter._http_client.cache_clear()

    assert len(peers) == threads


@pytest.mark.parametrize("payload", [["call.hangup"], "call.hangup", 7])
def test_a_signed_event_whose_payload_is_not_an_object_is_ignored_not_a_500(
    client, tenant: Tenant, placed: Call, payload: object
) -> None:
    path = f"/webhooks/calls/{placed.pk}/status"
    body = {"data": {"event_type": "call.hangup", "payload": payload}}
    webhook = Webhook(body=json.dumps(body).encode(), content_type="application/json")

    response = signed(client, telnyx, path, webhook)

    assert (response.status_code, response.json()) == (
        200,
        {"detail": "Ignored: no lifecycle change."},
    )
    placed.refresh_from_db()
    assert placed.status == "initiated"
    assert not CallEvent.objects.filter(call=placed).exists()

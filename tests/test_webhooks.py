"""Customer webhooks: endpoints, the outbox written with each change, and delivery to a real
receiver on loopback, every delivery verified with the `standardwebhooks` package."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from calls.models import Call
from tests.conftest import Tenant, make_tenant
from tests.factories import PhoneNumberFactory
from tests.test_twilio import (
    CALL_SID,
    CALLS_URL,
    initiate,
    settle_on_twilios_record,
    signed_post,
    twilio_created,
)
from tests.webhook_receiver import Receiver, receiver
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import deliveries_claim_due, delivery_send, events_dispatch

FROM = "+15551234567"


@pytest.fixture
def private_targets(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 300]
    return settings


@pytest.fixture
def twilio_number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number=FROM, twilio=True)


def create_endpoint(tenant: Tenant, url: str, **body: Any) -> dict[str, Any]:
    response = tenant.client.post("/webhook-endpoints", {"url": url, **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def drain(*, at=None) -> int:
    """What the relay and the worker do, here and now: fan out, send what is due, until
    nothing is left to send; returns how many sends."""
    sent = 0
    while True:
        events_dispatch(now=at)
        due = deliveries_claim_due(now=at)
        if not due:
            return sent
        for delivery_id in due:
            delivery_send(delivery_id=delivery_id)
            sent += 1


def twilio_call_through_to_the_end(tenant: Tenant, duration: str = "42") -> Call:
    """A Twilio call: placed, ringing, answered, completed, settled on Twilio's record."""
    with responses.RequestsMock() as api:
        api.post(CALLS_URL, json=twilio_created(), status=201)
        assert initiate(tenant, metadata={"crm_id": "c_1"}).status_code == 200
    call = Call.objects.get()
    path = f"/webhooks/calls/{call.pk}/status"
    for status in ("ringing", "in-progress"):
        assert signed_post(tenant.client, path, {"CallSid": CALL_SID, "CallStatus": status})
    ended = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": duration}
    assert signed_post(tenant.client, path, ended).status_code == 200
    settle_on_twilios_record(call, "completed", duration)
    call.refresh_from_db()
    assert call.cost_cents is not None
    return call


class TestEndpoints:
    def test_creating_one_shows_its_secret_once(self, tenant: Tenant) -> None:
        created = create_endpoint(tenant, "https://hooks.example.com/burki")

        assert created == {
            "id": created["id"],
            "url": "https://hooks.example.com/burki",
            "events": [],
            "enabled": True,
            "disabled_reason": "",
            "created_at": created["created_at"],
            "updated_at": created["updated_at"],
            "secret": created["secret"],
        }
        assert created["secret"].startswith("whsec_")
        Webhook(created["secret"])  # a secret the standard's own verifier takes
        endpoint = WebhookEndpoint.objects.get()
        assert (endpoint.organization, endpoint.secret) == (tenant.organization, created["secret"])
        shown = tenant.client.get(f"/webhook-endpoints/{created['id']}").json()
        listed = tenant.client.get("/webhook-endpoints").json()["results"]
        assert "secret" not in shown and listed == [shown]

    def test_the_secret_is_encrypted_at_rest(self, tenant: Tenant) -> None:
        created = create_endpoint(tenant, "https://hooks.example.com/burki")

        with connection.cursor() as cursor:
            cursor.execute("SELECT secret FROM webhooks_webhookendpoint")
            (stored,) = cursor.fetchone()
        assert created["secret"] not in stored and stored.startswith("gAAAA")

    def test_it_can_be_changed_rotated_and_deleted(self, tenant: Tenant) -> None:
        created = create_endpoint(tenant, "https://hooks.example.com/a", events=["call.ended"])
        path = f"/webhook-endpoints/{created['id']}"

        changed = tenant.client.patch(
            path,
            {"url": "https://hooks.example.com/b", "events": [], "enabled": False},
            format="json",
        )
        rotated = tenant.client.post(f"{path}/rotate-secret")
        deleted = tenant.client.delete(path)

        assert changed.status_code == 200
        assert (changed.json()["url"], changed.json()["events"]) == (
            "https://hooks.example.com/b",
            [],
        )
        assert changed.json()["enabled"] is False
        assert rotated.status_code == 200
        assert rotated.json()["secret"].startswith("whsec_")
        assert rotated.json()["secret"] != created["secret"]
        assert deleted.status_code == 204
        assert not WebhookEndpoint.objects.exists()

    def test_another_organizations_endpoint_is_not_found(
        self, tenant: Tenant, outsider: Tenant
    ) -> None:
        created = create_endpoint(tenant, "https://hooks.example.com/burki")
        path = f"/webhook-endpoints/{created['id']}"

        answers = [
            outsider.client.get(path),
            outsider.client.patch(path, {"enabled": False}, format="json"),
            outsider.client.delete(path),
            outsider.client.post(f"{path}/rotate-secret"),
            outsider.client.get(f"{path}/deliveries"),
        ]

        assert [a.status_code for a in answers] == [404] * 5
        assert outsider.client.get("/webhook-endpoints").json()["results"] == []
        endpoint = WebhookEndpoint.objects.get()
        assert (endpoint.enabled, endpoint.secret) == (True, created["secret"])

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.0.0.7/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
        ],
    )
    def test_a_private_address_is_refused_unless_allowed(
        self, tenant: Tenant, settings, url: str
    ) -> None:
        refused = tenant.client.post("/webhook-endpoints", {"url": url}, format="json")

        assert refused.status_code == 400
        assert refused.json()["errors"] == {"url": ["url must not point at a private address"]}
        assert not WebhookEndpoint.objects.exists()
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
        assert (
            tenant.client.post("/webhook-endpoints", {"url": url}, format="json").status_code == 201
        )

    @pytest.mark.parametrize(
        ("body", "errors"),
        [
            ({"url": "ftp://example.com/x"}, {"url": ["url must be an http or https URL"]}),
            ({}, {"url": ["url is required"]}),
            (
                {"url": "https://example.com/x", "events": ["call.exploded"]},
                {
                    "events": {
                        "0": [
                            "events: each must be one of call.status_changed, call.ended, "
                            "call.answered_by, call.transferred, campaign.started, "
                            "campaign.completed"
                        ]
                    }
                },
            ),
            (
                {"url": "https://example.com/x", "events": "call.ended"},
                {"events": ["events must be a list of event types"]},
            ),
        ],
    )
    def test_a_bad_body_is_a_400_and_creates_nothing(
        self, tenant: Tenant, body: dict[str, Any], errors: dict[str, Any]
    ) -> None:
        response = tenant.client.post("/webhook-endpoints", body, format="json")

        assert response.status_code == 400
        assert response.json()["errors"] == errors
        assert not WebhookEndpoint.objects.exists()


class TestTheOutbox:
    def test_a_call_writes_each_status_change_and_its_end_in_sequence(
        self, tenant: Tenant, twilio_number
    ) -> None:
        call = twilio_call_through_to_the_end(tenant)

        events = list(WebhookEvent.objects.filter(subject_id=call.pk).order_by("sequence"))
        assert [(e.sequence, e.type, e.data["status"]) for e in events] == [
            (1, "call.status_changed", "queued"),
            (2, "call.status_changed", "initiated"),
            (3, "call.status_changed", "ringing"),
            (4, "call.status_changed", "in-progress"),
            (5, "call.status_changed", "completed"),
            (6, "call.ended", "completed"),
        ]
        assert {e.organization_id for e in events} == {tenant.organization.pk}
        assert events[-1].data["cost_cents"] == call.cost_cents == 7
        assert events[-1].data["metadata"] == {"crm_id": "c_1"}

    def test_a_refused_call_writes_nothing_and_a_failed_one_its_end(
        self, tenant: Tenant, twilio_number
    ) -> None:
        with responses.RequestsMock() as api:
            api.post(CALLS_URL, json={"code": 21211, "message": "Invalid 'To'"}, status=400)
            assert initiate(tenant).status_code == 502
        tenant.organization.balance.balance_cents = 0
        assert initiate(tenant, to_phone_number="x").status_code == 400

        call = Call.objects.get()
        assert list(WebhookEvent.objects.values_list("type", "data__status")) == [
            ("call.status_changed", "queued"),
            ("call.status_changed", "failed"),
            ("call.ended", "failed"),
        ]
        assert call.status == "failed"


def deliveries(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    return receiver.verified(secret)


class TestDelivery:
    def test_every_event_arrives_signed_in_order_as_the_api_shows_the_call(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver() as hooks:
            secret = create_endpoint(tenant, hooks.url)["secret"]
            call = twilio_call_through_to_the_end(tenant)

            drain()

        payloads = deliveries(hooks, secret)
        assert [(p["type"], p["data"]["sequence"]) for p in payloads] == [
            ("call.status_changed", 1),
            ("call.status_changed", 2),
            ("call.status_changed", 3),
            ("call.status_changed", 4),
            ("call.status_changed", 5),
            ("call.ended", 6),
        ]
        assert [p["data"].get("previous_status") for p in payloads[:5]] == [
            None,
            "queued",
            "initiated",
            "ringing",
            "in-progress",
        ]
        shown = tenant.client.get(f"/calls/{call.pk}").json()
        del shown["events"]
        assert payloads[-1]["data"] == {**shown, "sequence": 6}
        assert payloads[-1]["data"]["metadata"] == {"crm_id": "c_1"}
        assert len({r.msg_id for r in hooks.taken()}) == 6
        assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
        assert WebhookAttempt.objects.count() == 6

    def test_a_failed_delivery_is_sent_again_later_with_the_same_id_and_later_events_wait(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        failures = {"left": 2}

        def fail_twice(received):
            if failures["left"]:
                failures["left"] -= 1
                return 500
            return 200

        with receiver(behaviour=fail_twice) as hooks:
            secret = create_endpoint(tenant, hooks.url, events=["call.status_changed"])["secret"]
            twilio_call_through_to_the_end(tenant)

            drain()  # the first event fails: the five after it wait
            first = WebhookDelivery.objects.get(sequence=1)
            assert (first.state, first.attempts) == ("pending", 1)
            assert first.next_attempt_at > timezone.now() + timedelta(seconds=4)
            assert len(hooks.requests) == 1
            drain(at=timezone.now() + timedelta(seconds=6))  # fails again, 300 s later next
            assert len(hooks.requests) == 2
            drain(at=timezone.now() + timedelta(seconds=400))

        assert [r.msg_id for r in hooks.requests[:3]] == [hooks.requests[0].msg_id] * 3
        payloads = deliveries(hooks, secret)
        assert [p["data"]["sequence"] for p in payloads] == [1, 2, 3, 4, 5]
        assert first.event.type == "call.status_changed"
        attempts = list(
            WebhookAttempt.objects.filter(delivery__sequence=1).values_list(
                "status_code", flat=True
            )
        )
        assert attempts == [500, 500, 200]

    def test_a_receiver_that_stalls_or_hangs_up_is_an_error_tried_again(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        private_targets.WEBHOOK_TIMEOUT_SECONDS = 0.5
        fates = iter(["stall", "hang up"])

        with receiver(behaviour=lambda _: next(fates, 200)) as hooks:
            create_endpoint(tenant, hooks.url)
            twilio_call_through_to_the_end(tenant)
            drain()
            drain(at=timezone.now() + timedelta(seconds=6))
            drain(at=timezone.now() + timedelta(seconds=400))

        errors = list(
            WebhookAttempt.objects.filter(delivery__sequence=1).values_list("error", "status_code")
        )
        assert errors[0][0].startswith("timed out")
        assert errors[1] == ("connection closed before an answer", None)
        assert errors[2] == ("", 200)
        assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}

    def test_a_redirect_is_not_followed(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver(behaviour=lambda _: 302) as hooks:
            create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            drain()

        (attempt,) = WebhookAttempt.objects.all()
        assert attempt.status_code == 302
        assert WebhookDelivery.objects.get().state == "pending"  # tried again later

    def test_410_disables_the_endpoint(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver(behaviour=lambda _: 410) as hooks:
            create_endpoint(tenant, hooks.url)
            twilio_call_through_to_the_end(tenant)
            drain(at=timezone.now() + timedelta(days=1))

        assert len(hooks.requests) == 1
        endpoint = WebhookEndpoint.objects.get()
        assert (endpoint.enabled, endpoint.disabled_reason) == (
            False,
            "The endpoint answered 410 Gone.",
        )
        states = dict(WebhookDelivery.objects.values_list("sequence", "state"))
        assert states == {
            1: "failed",
            2: "pending",
            3: "pending",
            4: "pending",
            5: "pending",
            6: "pending",
        }

    def test_an_endpoint_failing_for_days_is_disabled(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        private_targets.WEBHOOK_RETRY_SCHEDULE = [60] * 20
        with receiver(behaviour=lambda _: 503) as hooks:
            create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            drain()
            WebhookEndpoint.objects.update(failing_since=timezone.now() - timedelta(days=6))
            drain(at=timezone.now() + timedelta(minutes=2))

        endpoint = WebhookEndpoint.objects.get()
        assert (endpoint.enabled, endpoint.disabled_reason) == (
            False,
            "Every delivery failed for 5 days.",
        )
        assert len(hooks.requests) == 2

    def test_a_loopback_receiver_is_refused_at_delivery_time_unless_allowed(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver() as hooks:
            create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            private_targets.WEBHOOK_ALLOW_PRIVATE_TARGETS = False

            drain()

        assert hooks.requests == []
        (attempt,) = WebhookAttempt.objects.all()
        assert (attempt.status_code, attempt.error) == (
            None,
            "url must not point at a private address",
        )

    def test_a_name_that_resolves_to_a_private_address_is_refused(
        self, tenant: Tenant, twilio_number, settings, monkeypatch
    ) -> None:
        import socket

        create_endpoint(tenant, "https://hooks.example.com/burki", events=["call.ended"])
        twilio_call_through_to_the_end(tenant)
        monkeypatch.setattr(
            socket,
            "getaddrinfo",
            lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443))],
        )

        drain()

        (attempt,) = WebhookAttempt.objects.all()
        assert attempt.error == "hooks.example.com resolves to a private address (10.1.2.3)."

    def test_after_a_rotation_both_secrets_verify_for_the_overlap(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver() as hooks:
            created = create_endpoint(tenant, hooks.url, events=["call.ended"])
            rotated = tenant.client.post(f"/webhook-endpoints/{created['id']}/rotate-secret")
            twilio_call_through_to_the_end(tenant)
            drain()

        (request,) = hooks.taken()
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        Webhook(created["secret"]).verify(request.body, request.headers)
        Webhook(rotated.json()["secret"]).verify(request.body, request.headers)

    def test_a_dead_workers_lease_runs_out_and_the_delivery_is_sent(
        self, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver() as hooks:
            create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            events_dispatch()
            assert len(deliveries_claim_due()) == 1  # and the worker died
            assert deliveries_claim_due() == []  # leased
            drain(at=timezone.now() + timedelta(seconds=61))

        assert len(hooks.taken()) == 1
        assert WebhookDelivery.objects.get().state == "delivered"

    def test_the_deliveries_api_shows_every_attempt_and_redeliver_sends_again(
        self, tenant: Tenant, outsider: Tenant, twilio_number, private_targets
    ) -> None:
        with receiver() as hooks:
            created = create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            drain()
            event = WebhookEvent.objects.get(type="call.ended")
            assert outsider.client.post(f"/webhook-events/{event.pk}/redeliver").status_code == 404
            again = tenant.client.post(f"/webhook-events/{event.pk}/redeliver")
            drain()

        assert (again.status_code, again.json()) == (202, {"endpoints": 1})
        assert [r.msg_id for r in hooks.taken()] == [str(event.pk)] * 2
        listed = tenant.client.get(f"/webhook-endpoints/{created['id']}/deliveries").json()
        (delivery,) = listed["results"]
        assert (delivery["event_id"], delivery["event_type"], delivery["state"]) == (
            str(event.pk),
            "call.ended",
            "delivered",
        )
        assert [a["status_code"] for a in delivery["attempt_log"]] == [200, 200]
        assert delivery["attempt_log"][0]["response_excerpt"] == '{"ok": true}'


def test_an_endpoint_made_after_an_event_does_not_get_it(
    tenant: Tenant, twilio_number, private_targets
) -> None:
    twilio_call_through_to_the_end(tenant)
    with receiver() as hooks:
        create_endpoint(tenant, hooks.url)
        drain()

    assert hooks.requests == []


def test_events_of_an_organization_without_endpoints_are_dispatched_to_no_one(
    tenant: Tenant, twilio_number
) -> None:
    other = make_tenant()
    create_endpoint(other, "https://hooks.example.com/other")
    twilio_call_through_to_the_end(tenant)

    assert events_dispatch() == 6
    assert not WebhookDelivery.objects.exists()
    assert WebhookEvent.objects.filter(dispatched_at__isnull=True).count() == 0


class TestTheAdmin:
    @pytest.fixture
    def admin_client(self, client, db):
        from django.contrib.auth.models import User

        client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw-tests"))
        return client

    def test_endpoints_and_deliveries_show_without_a_secret_and_can_be_sent_again(
        self, admin_client, tenant: Tenant, twilio_number, private_targets
    ) -> None:
        from django.urls import reverse

        with receiver() as hooks:
            created = create_endpoint(tenant, hooks.url, events=["call.ended"])
            twilio_call_through_to_the_end(tenant)
            drain()
            delivery = WebhookDelivery.objects.get()
            pages = [
                admin_client.get(reverse("admin:webhooks_webhookendpoint_changelist")),
                admin_client.get(
                    reverse("admin:webhooks_webhookendpoint_change", args=[created["id"]])
                ),
                admin_client.get(reverse("admin:webhooks_webhookdelivery_changelist")),
                admin_client.get(
                    reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])
                ),
            ]
            again = admin_client.post(
                reverse("admin:webhooks_webhookdelivery_changelist"),
                {"action": "redeliver", "_selected_action": [delivery.pk]},
            )
            drain()

        for page in pages:
            assert page.status_code == 200
            assert created["secret"] not in page.content.decode()
            assert created["secret"].removeprefix("whsec_") not in page.content.decode()
        assert hooks.url.encode() in pages[0].content
        assert again.status_code == 302
        assert len(hooks.taken()) == 2
        assert WebhookAttempt.objects.count() == 2


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ([1, 2], "metadata must be an object"),
        ({f"k{i}": i for i in range(21)}, "metadata may hold at most 20 keys"),
        (
            {"has space": 1},
            "metadata: a key must be letters, digits and _ . : -, at most 40 characters",
        ),
        (
            {"k" * 41: 1},
            "metadata: a key must be letters, digits and _ . : -, at most 40 characters",
        ),
        ({"nested": {"a": 1}}, "metadata.nested must be a string, number, boolean or null"),
        ({"big": "x" * 501}, "metadata.big must be at most 500 characters"),
        ({"esc": "\x1b[31m"}, "metadata.esc must not contain NUL, surrogate or control characters"),
    ],
)
def test_bad_metadata_is_a_400_naming_it_and_places_nothing(
    tenant: Tenant, metadata: Any, error: str
) -> None:
    PhoneNumberFactory(organization=tenant.organization, number=FROM)

    response = initiate(tenant, metadata=metadata)

    assert response.status_code == 400
    assert response.json()["errors"] == {"metadata": [error]}
    assert not Call.objects.exists()
    assert not WebhookEvent.objects.exists()


def test_an_event_that_cannot_be_rendered_is_tried_as_often_as_any_then_failed(
    tenant: Tenant, twilio_number, private_targets, monkeypatch
) -> None:
    """A renderer that raises (a bug, a row it cannot read) made delivery_send raise before any
    attempt was counted: the lease ran out and the delivery was sent again at every one,
    forever. It is now an attempt like a receiver's 500, with what went wrong, and fails once
    the schedule is spent; the other events of the call are not held behind it for ever."""
    from webhooks import services

    def broken(event: WebhookEvent) -> dict[str, Any]:
        raise KeyError("a column the renderer expected")

    monkeypatch.setitem(services._renderers, "call.ended", broken)
    with receiver() as hooks:
        create_endpoint(tenant, hooks.url)
        twilio_call_through_to_the_end(tenant)
        now = timezone.now()
        for minutes in (0, 1, 10, 60):
            drain(at=now + timedelta(minutes=minutes))

    ended = WebhookDelivery.objects.get(event__type="call.ended")
    assert (ended.state, ended.attempts) == ("failed", 3)
    errors = list(WebhookAttempt.objects.filter(delivery=ended).values_list("status_code", "error"))
    assert errors == [(None, "The event could not be rendered: KeyError.")] * 3
    assert [r.json["type"] for r in hooks.requests] == ["call.status_changed"] * 5
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.enabled, endpoint.failing_since) == (True, None)  # our failure, not its


# Sending one delivery, counted as tests/test_query_budget.py counts (SAVEPOINT/RELEASE here,
# BEGIN/COMMIT on the worker):
#   1. SELECT the delivery JOIN its event and endpoint (primary key)
#   2. SELECT the subject's previous event's data, for call.status_changed's previous_status
#      (index on subject and sequence); not for call.ended
#   3. SAVEPOINT
#   4. INSERT the attempt
#   5. UPDATE the delivery: attempts, state, lease
#   6. RELEASE SAVEPOINT
# then, while the endpoint takes them, the subject's next delivery:
#   7. SELECT the next one's id, first in line and not leased
#   8. UPDATE its lease (not when there is none)
DELIVERY = 8
DELIVERY_OF_CALL_ENDED = DELIVERY - 1


def test_a_calls_deliveries_cost_eight_queries_each_sent_in_one_go(
    tenant: Tenant, twilio_number, private_targets
) -> None:
    from django.test.utils import CaptureQueriesContext

    with receiver() as hooks:
        create_endpoint(tenant, hooks.url)
        twilio_call_through_to_the_end(tenant)
        events_dispatch()
        (first,) = deliveries_claim_due()
        with CaptureQueriesContext(connection) as queries:
            delivery_send(delivery_id=first)

    types = [r.json["type"] for r in hooks.requests]
    assert types == ["call.status_changed"] * 5 + ["call.ended"]
    # The last one finds no next delivery: its SELECT, and no lease to take.
    assert len(queries) == 5 * DELIVERY + DELIVERY_OF_CALL_ENDED - 1
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}

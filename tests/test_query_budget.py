"""The SQL each hot request sends, counted exactly, and the plans that keep it flat.

The counts are the production counts: here the outermost transaction of a request is a
SAVEPOINT ... RELEASE SAVEPOINT inside the test's own transaction, in production it is
BEGIN ... COMMIT, and both pairs are counted. The API key's last_used_at is written at most
once a minute, so a steady stream of requests skips that write; both cases are counted.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import LedgerEntry
from burki.models import ApiKey
from calls.models import Call, CallEvent
from calls.services import call_settle_from_record
from tests.conftest import Tenant, assert_money_consistent
from tests.factories import AssistantFactory, OrganizationFactory, PhoneNumberFactory
from tests.test_twilio import CALL_SID, CALLS_URL, signed_post, twilio_created

TO = "+15559876543"

# POST /calls/initiate, steady state:
#   1. SELECT the API key JOIN its organization, by key prefix (unique index)
#   2. SELECT the from-number LEFT JOIN its assistant, flow, flow's base assistant and provider
#      account, by (organization, number) (unique index on number, primary keys)
#   3. SELECT 1 from the do-not-call list by (organization, to-number) (unique index): the
#      compliance check, before anything is recorded or held (the provider account's pace is
#      kept in the cache, not the database)
#   4. SAVEPOINT (BEGIN in production)
#   5. INSERT the call (status queued)
#   6. WITH claimed AS (UPDATE the balance: hold the call's cost, only if it is covered and
#      fewer holds than the cap on simultaneous calls are open, RETURNING the new figures)
#      INSERT the ledger's hold row (balance by organization, unique)
#   7. INSERT the outbox's call.status_changed (queued): the call's row and the call's last
#      sequence read by subqueries in the same statement
#   8. RELEASE SAVEPOINT (COMMIT)
#   9. SAVEPOINT (BEGIN)
#  10. UPDATE the call: the provider's call id, queued -> initiated (primary key)
#  11. INSERT the outbox's call.status_changed (initiated)
#  12. RELEASE SAVEPOINT (COMMIT)
INITIATE = 12
# ...plus, with assistant_id: SELECT the assistant by (id, organization) (primary key).
INITIATE_WITH_ASSISTANT = INITIATE + 1
# ...plus, only when the organization's open holds have reached its cap (a hold outlives a call
# whose final event never came, so the cap is then decided exactly): after the one-statement
# hold is refused, SELECT the balance FOR UPDATE, SELECT COUNT of the live calls up to cap + 1
# (partial index call_org_live), UPDATE the balance, INSERT the ledger's hold row.
AT_THE_CAP = 4
# ...plus, on a key's first request in a minute: UPDATE the API key's last_used_at.
KEY_USE = 1

# A status webhook that moves a call on (e.g. ringing):
#   1. SELECT the call LEFT JOIN its provider account, by id (primary key)
#   2. SAVEPOINT / BEGIN
#   3. UPDATE the call, claimed: WHERE id = ... AND status IN (earlier states)
#   4. INSERT the call event
#   5. INSERT the outbox's call.status_changed (one statement, see INITIATE)
#   6. RELEASE SAVEPOINT / COMMIT
STATUS = 6
# A machine-detection verdict (answered_by) that asks nothing of the provider:
#   1. SELECT the call LEFT JOIN its provider account, by id (primary key)
#   2. SAVEPOINT / BEGIN
#   3. UPDATE the call's answered_by, claimed: WHERE id = ... AND answered_by IS NULL
#   4. INSERT the call event
#   5. INSERT the outbox's call.answered_by
#   6. RELEASE SAVEPOINT / COMMIT
VERDICT = 6
# A final status (completed, busy, ...): the same, and settling the money before the commit:
#   +1 SELECT the balance FOR UPDATE (by organization, unique)
#   +1 UPDATE the balance (once, however many ledger rows)
#   +1 INSERT the charge and release ledger rows (one statement)
#   +1 INSERT the outbox's call.ended
FINAL_STATUS = STATUS + 4
# A final status from a provider whose webhooks the account's own secret signs (Twilio,
# Vonage): the same five as STATUS. The end is recorded, the money held until the provider's
# record is read (below).
FINAL_STATUS_HELD = STATUS
# Settling it on the provider's record (calls.services.call_settle_from_record, on the worker):
#   1. SELECT the call LEFT JOIN its provider account (primary key)
#      (the provider's record, over its API)
#   2. SAVEPOINT / BEGIN
#   3. UPDATE the call's cost, claimed: WHERE id = ... AND cost_cents IS NULL
#   4. SELECT the balance FOR UPDATE
#   5. UPDATE the balance
#   6. INSERT the charge and release ledger rows
#   7. INSERT the outbox's call.ended
#   8. RELEASE SAVEPOINT / COMMIT
SETTLE_FROM_RECORD = 8
# A repeated final status: SELECT the call, SAVEPOINT, the claim that changes nothing, RELEASE.
REPEATED_STATUS = 4
# The answer webhook: SELECT the call LEFT JOIN its provider account (primary key).
ANSWER = 1


def body(from_number: str, **extra: object) -> dict[str, object]:
    return {"from_phone_number": from_number, "to_phone_number": TO, **extra}


def key_used_just_now(tenant: Tenant) -> None:
    ApiKey.objects.filter(organization=tenant.organization).update(last_used_at=timezone.now())


def key_last_used_long_ago(tenant: Tenant) -> None:
    ApiKey.objects.filter(organization=tenant.organization).update(
        last_used_at=timezone.now() - timedelta(minutes=5)
    )


def assert_initiated(response, tenant: Tenant, call_sid_prefix: str) -> Call:
    assert response.status_code == 200
    call = Call.objects.get(pk=response.json()["call_id"])
    assert response.json() == {
        "message": "Call initiated successfully",
        "call_sid": call.call_sid,
        "call_id": str(call.pk),
    }
    assert call.status == "initiated"
    assert call.call_sid.startswith(call_sid_prefix)
    assert_money_consistent(tenant.organization)
    return call


@pytest.fixture
def sandbox_number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234567")


@pytest.fixture
def twilio_number(tenant: Tenant):
    return PhoneNumberFactory(organization=tenant.organization, number="+15551234500", twilio=True)


@pytest.fixture
def twilio_api():
    with responses.RequestsMock() as mock:
        mock.post(CALLS_URL, json=twilio_created(), status=201)
        yield mock


class TestInitiate:
    def test_from_a_sandbox_number_it_sends_seven_queries(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries
    ) -> None:
        key_used_just_now(tenant)

        with django_assert_num_queries(INITIATE):
            response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

        assert_initiated(response, tenant, "SB")

    def test_with_machine_detection_it_sends_the_same(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries
    ) -> None:
        key_used_just_now(tenant)
        voicemail = {"on_machine": "leave_message", "message": "Hi {{name}}, call us back."}

        with django_assert_num_queries(INITIATE):  # the settings ride in the call's INSERT
            response = tenant.client.post(
                "/calls/initiate",
                body("+15551234567", variables={"name": "Jo"}, voicemail=voicemail),
                format="json",
            )

        call = assert_initiated(response, tenant, "SB")
        assert call.voicemail == {"on_machine": "leave_message", "message": "Hi Jo, call us back."}

    def test_with_an_assistant_override_it_sends_eight(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries
    ) -> None:
        other = AssistantFactory(organization=tenant.organization)
        key_used_just_now(tenant)

        with django_assert_num_queries(INITIATE_WITH_ASSISTANT):
            response = tenant.client.post(
                "/calls/initiate", body("+15551234567", assistant_id=other.pk), format="json"
            )

        assert assert_initiated(response, tenant, "SB").assistant == other

    def test_from_a_twilio_number_it_sends_seven(
        self, tenant: Tenant, twilio_number, twilio_api, django_assert_num_queries
    ) -> None:
        key_used_just_now(tenant)

        with django_assert_num_queries(INITIATE):
            response = tenant.client.post("/calls/initiate", body("+15551234500"), format="json")

        assert assert_initiated(response, tenant, "CA").call_sid == CALL_SID
        assert len(twilio_api.calls) == 1

    def test_from_a_twilio_number_with_an_assistant_override_it_sends_eight(
        self, tenant: Tenant, twilio_number, twilio_api, django_assert_num_queries
    ) -> None:
        other = AssistantFactory(organization=tenant.organization)
        key_used_just_now(tenant)

        with django_assert_num_queries(INITIATE_WITH_ASSISTANT):
            response = tenant.client.post(
                "/calls/initiate", body("+15551234500", assistant_id=other.pk), format="json"
            )

        assert assert_initiated(response, tenant, "CA").assistant == other

    @pytest.mark.parametrize("last_used", [None, "long ago"])
    def test_a_keys_first_use_in_a_minute_adds_one_write(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries, last_used
    ) -> None:
        if last_used:
            key_last_used_long_ago(tenant)
        before = timezone.now()

        with django_assert_num_queries(INITIATE + KEY_USE):
            response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

        assert_initiated(response, tenant, "SB")
        last_used_at = ApiKey.objects.get(organization=tenant.organization).last_used_at
        assert last_used_at is not None and last_used_at >= before

    def test_the_next_request_within_the_minute_skips_that_write(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries
    ) -> None:
        tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

        with django_assert_num_queries(INITIATE):
            response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

        assert_initiated(response, tenant, "SB")


def test_open_holds_at_the_cap_are_counted_exactly_under_the_lock(
    tenant: Tenant, sandbox_number, django_assert_num_queries
) -> None:
    """A call whose final event never came still holds its money, but once its time limit has
    passed it no longer takes a place under the cap: the count decides."""
    tenant.organization.max_concurrent_calls = 1
    tenant.organization.save(update_fields=["max_concurrent_calls"])
    stale = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")
    Call.objects.filter(pk=stale.json()["call_id"]).update(
        live_until=timezone.now() - timedelta(seconds=1)
    )
    key_used_just_now(tenant)

    with django_assert_num_queries(INITIATE + AT_THE_CAP):
        response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

    assert_initiated(response, tenant, "SB")


def test_a_balance_short_of_the_longest_call_takes_the_locked_path(
    db, django_assert_num_queries
) -> None:
    """Not the hot path: the hold that would cover the assistant's longest call is refused, so
    the balance is locked, the call is cut to what the money pays for, and its row follows.
    Four more statements: after the one-statement hold is refused, SELECT ... FOR UPDATE, the
    balance's UPDATE, the ledger's INSERT, and the UPDATE of the call's shorter limit."""
    from tests.conftest import make_tenant

    tenant = make_tenant(balance_cents=25)
    PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    key_used_just_now(tenant)

    with django_assert_num_queries(INITIATE + 4):
        response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

    call = assert_initiated(response, tenant, "SB")
    assert (call.time_limit_seconds, call.hold_cents) == (150, 25)


def test_a_webhook_that_beat_the_providers_answer_keeps_its_state(
    tenant: Tenant, sandbox_number, monkeypatch, django_assert_num_queries
) -> None:
    """The provider's first webhook can arrive before its answer to our request: the call keeps
    the state the webhook gave it and still gets its call id, in one more UPDATE, and is read
    again so that what initiate returns is the call as it now stands."""
    from telephony.providers.sandbox import SandboxProvider

    def place_call_and_ring_first(self, call, account):  # type: ignore[no-untyped-def]
        Call.objects.filter(pk=call.call_id).update(status="ringing")
        return "SB-raced"

    monkeypatch.setattr(SandboxProvider, "place_call", place_call_and_ring_first)
    key_used_just_now(tenant)

    # The webhook's UPDATE, then our claim changes nothing (and writes no event: the webhook
    # reported the change), our UPDATE of the call id and the SELECT that re-reads the call.
    with django_assert_num_queries(INITIATE + 2):
        response = tenant.client.post("/calls/initiate", body("+15551234567"), format="json")

    assert response.json()["call_sid"] == "SB-raced"
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.status, call.call_sid) == ("ringing", "SB-raced")
    assert call.initiated_at is not None


def fill_tables(tenant: Tenant, rows: int) -> None:
    """Calls and ledger rows for this organization and three others, written in bulk."""
    org_ids = [tenant.organization.pk] + [OrganizationFactory().pk for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO calls_call (
                id, organization_id, from_number, to_number, provider, call_sid, status,
                welcome_message, agenda, variables, metadata, time_limit_seconds,
                rate_cents_per_minute,
                hold_cents, duration_seconds, cost_cents, end_reason, error,
                created_at, initiated_at, answered_at, ended_at, updated_at
            )
            SELECT gen_random_uuid(), (%(orgs)s::bigint[])[1 + i %% 4], '+15551234567',
                   '+15559876543', 'sandbox', 'OLD' || i, 'completed', '', '', '{}'::jsonb,
                   '{}'::jsonb,
                   600, 10, 100, 60, 10, '', '', at, at, at, at, at
            FROM (
                SELECT i, now() - make_interval(secs => i) AS at
                FROM generate_series(1, %(rows)s) AS i
            ) AS generated
            """,
            {"orgs": org_ids, "rows": rows},
        )
        # Zero amounts: every balance still equals its ledger's sum.
        cursor.execute(
            """
            INSERT INTO billing_ledgerentry (
                organization_id, kind, amount_cents, held_change_cents, balance_after_cents,
                held_after_cents, call_id, memo, created_at
            )
            SELECT organization_id, 'charge', 0, 0, 0, 0, id, '', created_at
            FROM calls_call WHERE call_sid LIKE 'OLD%%'
            """
        )
        cursor.execute("ANALYZE calls_call")
        cursor.execute("ANALYZE billing_ledgerentry")


class TestLargeTables:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [({}, INITIATE), ({"assistant_id": "other"}, INITIATE_WITH_ASSISTANT)],
    )
    def test_initiate_sends_the_same_queries_with_many_calls_and_ledger_rows(
        self, tenant: Tenant, sandbox_number, django_assert_num_queries, extra, expected
    ) -> None:
        if extra:
            extra = {"assistant_id": AssistantFactory(organization=tenant.organization).pk}
        fill_tables(tenant, rows=5000)
        key_used_just_now(tenant)

        with django_assert_num_queries(expected):
            response = tenant.client.post(
                "/calls/initiate", body("+15551234567", **extra), format="json"
            )

        assert_initiated(response, tenant, "SB")
        assert Call.objects.count() == 5001


@pytest.fixture
def placed_call(tenant: Tenant, twilio_number, twilio_api) -> Call:
    response = tenant.client.post("/calls/initiate", body("+15551234500"), format="json")
    return Call.objects.get(pk=response.json()["call_id"])


class TestWebhooks:
    def test_a_status_that_moves_the_call_on_sends_five(
        self, client, placed_call: Call, django_assert_num_queries
    ) -> None:
        path = f"/webhooks/calls/{placed_call.pk}/status"

        with django_assert_num_queries(STATUS):
            response = signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "ringing"})

        assert response.json() == {"detail": "Applied."}
        placed_call.refresh_from_db()
        assert placed_call.status == "ringing"

    def test_a_final_status_is_held_in_five_and_settled_on_the_record_in_seven(
        self, client, tenant: Tenant, placed_call: Call, django_assert_num_queries
    ) -> None:
        path = f"/webhooks/calls/{placed_call.pk}/status"
        completed = {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "125"}

        with django_assert_num_queries(FINAL_STATUS_HELD):
            response = signed_post(client, path, completed)
        placed_call.refresh_from_db()
        assert (placed_call.status, placed_call.cost_cents) == ("completed", None)
        with responses.RequestsMock() as api, django_assert_num_queries(SETTLE_FROM_RECORD):
            api.get(record_url(CALL_SID), json=twilio_record("completed", "125"))
            assert call_settle_from_record(call_id=placed_call.pk)

        assert response.json() == {"detail": "Applied."}
        placed_call.refresh_from_db()
        assert (placed_call.status, placed_call.cost_cents) == ("completed", 21)
        assert list(
            LedgerEntry.objects.filter(call_id=placed_call.pk)
            .order_by("id")
            .values_list("kind", "amount_cents", "held_change_cents")
        ) == [("hold", 0, 100), ("charge", -21, -21), ("release", 0, -79)]
        assert_money_consistent(tenant.organization)

    def test_a_final_status_with_nothing_to_charge_costs_the_same(
        self, client, tenant: Tenant, placed_call: Call, django_assert_num_queries
    ) -> None:
        path = f"/webhooks/calls/{placed_call.pk}/status"

        with django_assert_num_queries(FINAL_STATUS_HELD):
            response = signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "busy"})
        with responses.RequestsMock() as api, django_assert_num_queries(SETTLE_FROM_RECORD):
            api.get(record_url(CALL_SID), json=twilio_record("busy", "0"))
            assert call_settle_from_record(call_id=placed_call.pk)

        assert response.json() == {"detail": "Applied."}
        assert list(
            LedgerEntry.objects.filter(call_id=placed_call.pk)
            .order_by("id")
            .values_list("kind", flat=True)
        ) == [
            "hold",
            "release",
        ]
        assert_money_consistent(tenant.organization)

    def test_a_repeated_final_status_sends_four_and_changes_nothing(
        self, client, tenant: Tenant, placed_call: Call, django_assert_num_queries
    ) -> None:
        path = f"/webhooks/calls/{placed_call.pk}/status"
        signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "busy"})
        with responses.RequestsMock() as api:
            api.get(record_url(CALL_SID), json=twilio_record("busy", "0"))
            assert call_settle_from_record(call_id=placed_call.pk)

        with django_assert_num_queries(REPEATED_STATUS):
            response = signed_post(client, path, {"CallSid": CALL_SID, "CallStatus": "busy"})

        assert response.json() == {"detail": "Ignored: already applied."}
        assert LedgerEntry.objects.filter(call_id=placed_call.pk).count() == 2
        assert_money_consistent(tenant.organization)

    def test_the_answer_webhook_sends_one(
        self, client, placed_call: Call, django_assert_num_queries
    ) -> None:
        with django_assert_num_queries(ANSWER):
            response = signed_post(
                client, f"/webhooks/calls/{placed_call.pk}/answer", {"CallSid": CALL_SID}
            )

        assert response.status_code == 200
        assert f'<Parameter name="call_id" value="{placed_call.pk}" />' in response.content.decode()


def plans(queries: list[dict[str, str]]) -> dict[str, str]:
    """EXPLAIN of every statement that reads or changes existing rows, with sequential scans
    priced out: a plan that still scans a table has no index to use."""
    explained = {}
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for query in queries:
            sql = query["sql"]
            if sql.split(None, 1)[0].upper() not in {"SELECT", "UPDATE", "WITH", "DELETE"}:
                continue
            cursor.execute("EXPLAIN " + sql)
            explained[sql] = "\n".join(row[0] for row in cursor.fetchall())
    return explained


class TestPlans:
    def test_every_lookup_on_the_hot_path_uses_an_index(
        self, client, tenant: Tenant, twilio_number, twilio_api
    ) -> None:
        fill_tables(tenant, rows=2000)
        other = AssistantFactory(organization=tenant.organization)
        key_last_used_long_ago(tenant)  # the once-a-minute write is on the path too

        with CaptureQueriesContext(connection) as initiate:
            response = tenant.client.post(
                "/calls/initiate", body("+15551234500", assistant_id=other.pk), format="json"
            )
        call_id = response.json()["call_id"]
        path = f"/webhooks/calls/{call_id}"
        with CaptureQueriesContext(connection) as webhooks:
            signed_post(client, f"{path}/answer", {"CallSid": CALL_SID})
            signed_post(client, f"{path}/status", {"CallSid": CALL_SID, "CallStatus": "ringing"})
            signed_post(
                client,
                f"{path}/status",
                {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "30"},
            )
            with responses.RequestsMock() as api:
                api.get(record_url(CALL_SID), json=twilio_record("completed", "30"))
                assert call_settle_from_record(call_id=call_id)
        with CaptureQueriesContext(connection) as detail:
            tenant.client.get(f"/calls/{call_id}")

        explained = plans(
            initiate.captured_queries + webhooks.captured_queries + detail.captured_queries
        )

        # Initiate: the key, its last_used_at, the number, the do-not-call list, the assistant,
        # the hold, the call's update; webhooks: the call, two claims; settling on the record:
        # the cost's claim, the balance lock and its update; the detail: the call and its
        # events (the key's SELECT is the same statement as before).
        assert len(explained) == 15
        for sql, plan in explained.items():
            assert "Seq Scan" not in plan, f"{sql}\n{plan}"
        assert Call.objects.get(pk=call_id).status == "completed"

    def test_lookups_by_a_foreign_key_use_the_composite_index_that_leads_with_it(
        self, tenant: Tenant, sandbox_number
    ) -> None:
        fill_tables(tenant, rows=2000)
        call = Call.objects.filter(organization=tenant.organization).first()
        assert call is not None

        with CaptureQueriesContext(connection) as lookups:
            list(LedgerEntry.objects.filter(call_id=call.pk))
            list(CallEvent.objects.filter(call=call))
            list(LedgerEntry.objects.filter(organization=tenant.organization)[:10])
            list(Call.objects.filter(organization=tenant.organization)[:10])

        explained = plans(lookups.captured_queries)
        assert len(explained) == 4
        for sql, plan in explained.items():
            assert "Seq Scan" not in plan, f"{sql}\n{plan}"


def record_url(sid: str) -> str:
    return CALLS_URL.replace(".json", f"/{sid}.json")


def twilio_record(status: str, duration: str) -> dict[str, str]:
    return {"sid": CALL_SID, "status": status, "duration": duration}

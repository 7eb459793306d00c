"""A campaign dialled by two real worker processes at once (Redis broker, Redis pace, the test
database): every recipient is dialled exactly once, at no more than the set rate."""

from __future__ import annotations

from collections import Counter

import pytest
from django.test import override_settings

from burki.pacing import paces_reset
from calls.models import Call
from campaigns import tasks
from campaigns.models import Attempt, Campaign, Recipient
from campaigns.services import campaign_start, campaigns_tick
from tests.celery_worker import celery_worker, wait_for
from tests.conftest import assert_money_consistent, make_tenant
from tests.factories import PhoneNumberFactory

pytestmark = pytest.mark.django_db(transaction=True)

RATE = 10
RECIPIENTS = 40
SHARED = {
    "CACHE_URL": "redis://127.0.0.1:6379/12",
    "SANDBOX_TIME_SCALE": "20",
    "CAMPAIGN_DIALER_SECONDS": "6",
    "CAMPAIGN_PACE_MAX_WAIT_SECONDS": "3",
}


def test_two_workers_dial_every_recipient_once_at_the_set_rate(tmp_path) -> None:
    paces_reset()
    tenant = make_tenant(balance_cents=1_000_000)
    tenant.organization.max_concurrent_calls = 100
    tenant.organization.save()
    number = PhoneNumberFactory(organization=tenant.organization, number="+15551234567")
    campaign = Campaign.objects.create(
        organization=tenant.organization,
        name="Two workers",
        from_numbers=[str(number.number)],
        calls_per_second=RATE,
        max_concurrent_calls=50,
    )
    from campaigns.services import recipients_add

    recipients_add(
        campaign=campaign,
        rows=[(i, {"to_phone_number": f"+1212555{i:04d}"}) for i in range(1, RECIPIENTS + 1)],
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        celery_worker(tmp_path / "a", **SHARED) as first,
        celery_worker(tmp_path / "b", **SHARED) as second,
        override_settings(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": SHARED["CACHE_URL"],
                }
            },
            SANDBOX_TIME_SCALE=20,
            CAMPAIGN_MAX_DIALERS=1,
        ),
    ):
        # Starting sends the campaign's one dialer (slot 0) to the second worker's queue, this
        # process's default; the first worker is given slot 1: both dial the campaign at once.
        campaign_start(campaign=campaign)
        tasks.campaign_dial.apply_async((str(campaign.pk), 1), queue=first.queue)

        def finished() -> bool:
            campaigns_tick()
            return Campaign.objects.get(pk=campaign.pk).status == "completed"

        done = wait_for(finished, timeout=60, interval=0.5)
        logs = first.log + second.log
    assert done, logs[-3000:]

    calls = list(Call.objects.filter(organization=tenant.organization).order_by("created_at"))
    per_number = Counter(call.to_number for call in calls)
    assert len(per_number) == RECIPIENTS and set(per_number.values()) == {1}  # no double dial
    assert Attempt.objects.count() == RECIPIENTS
    # The sandbox's …0002 is busy and …0003 never answers; the rest talk.
    outcomes = Counter(Recipient.objects.values_list("state", "outcome"))
    assert outcomes == {
        ("done", "completed"): RECIPIENTS - 2,
        ("done", "busy"): 1,
        ("done", "no-answer"): 1,
    }
    # Both processes dialled (each logs the attempts its dialer began).
    assert (
        "campaigns.tasks.campaign_dial" in first.log
        and "campaigns.tasks.campaign_dial" in second.log
    )
    begun = [
        int(line.rsplit(":", 1)[1])
        for line in logs.splitlines()
        if "campaign_dial" in line and "succeeded" in line
    ]
    assert sum(begun) == RECIPIENTS and sum(1 for n in begun if n) >= 2, begun
    # Never faster than the set rate: any RATE + 1 consecutive dials span at least a second.
    times = [call.created_at for call in calls]
    spans = [(times[i + RATE] - times[i]).total_seconds() for i in range(len(times) - RATE)]
    assert min(spans) >= 0.95, spans
    assert_money_consistent(tenant.organization)

"""The initiate contract's 403s come from object permissions that judge what they are handed:
they read neither the body nor the database, and a row of no one reads like another's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from burki.models import ApiKey
from calls.permissions import (
    AssistantBelongsToOrganization,
    FromNumberBelongsToOrganization,
    caller_refusal,
)
from calls.selectors import Caller, caller_named
from tests.conftest import Tenant
from tests.factories import AssistantFactory, PhoneNumberFactory

NUMBER = "+15551234567"


def request_of(tenant: Tenant) -> Any:
    # What the permissions may read of a request: the key it was authenticated with.
    return SimpleNamespace(auth=ApiKey.objects.get(organization=tenant.organization))


def judge(permission: Any, tenant: Tenant, caller: Caller) -> tuple[bool, str | None]:
    allowed = permission.has_object_permission(request_of(tenant), None, caller)
    return allowed, None if allowed else permission.message


def test_the_organizations_own_number_and_assistant_pass(
    tenant: Tenant, django_assert_num_queries
) -> None:
    number = PhoneNumberFactory(organization=tenant.organization, number=NUMBER)
    assistant = AssistantFactory(organization=tenant.organization)
    caller = caller_named(number=NUMBER, assistant_id=assistant.pk)
    request = request_of(tenant)

    with django_assert_num_queries(0):
        for permission in (FromNumberBelongsToOrganization(), AssistantBelongsToOrganization()):
            assert permission.has_object_permission(request, None, caller)

    assert (caller.phone_number, caller.assistant) == (number, assistant)


def test_another_organizations_number_and_no_ones_get_the_same_sentence(
    tenant: Tenant, outsider: Tenant, django_assert_num_queries
) -> None:
    PhoneNumberFactory(organization=outsider.organization, number=NUMBER)
    theirs = caller_named(number=NUMBER)
    no_ones = caller_named(number="+15550000000")
    sentence = "Unauthorized: phone number {} does not belong to your organization"

    with django_assert_num_queries(1):  # the request's API key, looked up by request_of
        request = request_of(tenant)
    with django_assert_num_queries(0):
        verdicts = [
            FromNumberBelongsToOrganization().has_object_permission(request, None, caller)
            for caller in (theirs, no_ones)
        ]
        refusals = [
            FromNumberBelongsToOrganization.refusal(caller, tenant.organization.pk)
            for caller in (theirs, no_ones)
        ]

    assert verdicts == [False, False]
    assert refusals == [sentence.format(NUMBER), sentence.format("+15550000000")]


def test_the_refusal_is_what_drf_answers_with(tenant: Tenant, outsider: Tenant) -> None:
    foreign = AssistantFactory(organization=outsider.organization)
    PhoneNumberFactory(organization=tenant.organization, number=NUMBER)

    assert judge(
        AssistantBelongsToOrganization(),
        tenant,
        caller_named(number=NUMBER, assistant_id=foreign.pk),
    ) == (False, f"Unauthorized: assistant {foreign.pk} does not belong to your organization")
    assert judge(
        AssistantBelongsToOrganization(), tenant, caller_named(number=NUMBER, assistant_id=10**9)
    ) == (False, f"Unauthorized: assistant {10**9} does not belong to your organization")
    assert judge(AssistantBelongsToOrganization(), tenant, caller_named(number=NUMBER)) == (
        True,
        None,
    )


def test_an_object_that_is_no_caller_is_not_theirs_to_judge(tenant: Tenant) -> None:
    request = request_of(tenant)

    assert FromNumberBelongsToOrganization().has_object_permission(request, None, object())
    assert AssistantBelongsToOrganization().has_object_permission(request, None, None)


def test_without_a_request_the_number_is_judged_before_the_assistant(
    tenant: Tenant, outsider: Tenant
) -> None:
    PhoneNumberFactory(organization=outsider.organization, number=NUMBER)
    foreign = AssistantFactory(organization=outsider.organization)
    both_foreign = caller_named(number=NUMBER, assistant_id=foreign.pk)

    assert caller_refusal(both_foreign, organization_id=tenant.organization.pk) == (
        f"Unauthorized: phone number {NUMBER} does not belong to your organization"
    )
    assert caller_refusal(both_foreign, organization_id=outsider.organization.pk) is None

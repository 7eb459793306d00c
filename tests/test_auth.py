from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from burki.models import ApiKey
from burki.services import api_key_revoke
from calls.models import Call
from tests.conftest import Tenant

BODY = {"from_phone_number": "+15551234567", "to_phone_number": "+15559876543"}
UNAUTHORIZED = {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("url", ["/calls/initiate", "/calls"])
def test_no_token_is_a_401_with_a_challenge(db, url: str) -> None:
    response = APIClient().post(url, BODY, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Bearer", "Invalid Authorization header. Use 'Bearer <api key>'."),
        ("Bearer a b", "Invalid Authorization header. Use 'Bearer <api key>'."),
        ("Bearer bk_not-a-real-key", "Invalid API key."),
        ("Bearer ", "Invalid Authorization header. Use 'Bearer <api key>'."),
    ],
)
def test_a_bad_token_is_a_401(db, header: str, detail: str) -> None:
    response = APIClient().post("/calls/initiate", BODY, format="json", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {"detail": detail}
    assert Call.objects.count() == 0


def test_a_key_with_a_known_prefix_but_wrong_secret_is_a_401(tenant: Tenant) -> None:
    forged = tenant.api_key[: ApiKey.PREFIX_LENGTH] + "x" * 40
    response = APIClient().get("/calls", HTTP_AUTHORIZATION=f"Bearer {forged}")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


def test_a_revoked_key_is_a_401(tenant: Tenant) -> None:
    api_key_revoke(api_key=ApiKey.objects.get(organization=tenant.organization))

    response = tenant.client.get("/calls")

    assert response.status_code == 401
    assert response.json() == {"detail": "This API key has been revoked."}


def test_only_a_hash_and_prefix_are_stored(tenant: Tenant) -> None:
    api_key = ApiKey.objects.get(organization=tenant.organization)

    assert tenant.api_key not in {api_key.prefix, api_key.hashed_key}
    assert api_key.hashed_key == ApiKey.hash(tenant.api_key)
    assert tenant.api_key.startswith(api_key.prefix)


def test_use_is_recorded(tenant: Tenant) -> None:
    before = timezone.now()

    assert tenant.client.get("/calls").status_code == 200

    assert ApiKey.objects.get(organization=tenant.organization).last_used_at >= before


def test_an_unknown_url_is_a_json_404(db) -> None:
    response = APIClient().get("/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
